// swift-tools-version:6.1
// Calisson: the permissioned clearing-house ledger of the Aix-Marseille-Provence nudge money.
// Module layout and dependency direction: Docs/ARCHITECTURE.md.
import PackageDescription

let package = Package(
    name: "Calisson",
    products: [
        .library(name: "Wire", targets: ["Wire"]),
        .library(name: "Crypto", targets: ["Crypto"]),
        .executable(name: "calisson-bench", targets: ["calisson-bench"]),
        .executable(name: "calisson-sim", targets: ["calisson-sim"]),
        .executable(name: "calisson-node", targets: ["calisson-node"]),
        .executable(name: "calisson", targets: ["calisson"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        // System libraries, found through pkg-config; `scripts/install-dependencies` installs them.
        .systemLibrary(
            name: "CLibUV", pkgConfig: "libuv", providers: [.apt(["libuv1-dev"])]),
        .systemLibrary(
            name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(
            name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(
            name: "CSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),

        // C kernels of the hot path: SHA-256 with SHA-NI (OpenSSL fallback), Merkle levels.
        .target(name: "CHotPath", dependencies: ["COpenSSL"]),

        // Canonical binary codec. No dependencies.
        .target(name: "Wire"),
        // Hashing, Merkle trees, Ed25519, batched verification.
        .target(name: "Crypto", dependencies: ["Wire", "CHotPath", "COpenSSL", "CSodium"]),
        // The PBFT replica as a pure state machine: no I/O, no clocks, no randomness.
        .target(name: "Consensus", dependencies: ["Wire", "Crypto"]),
        // The clearing house: tokens, programmes, clearing, governance, authenticated state. Pure.
        .target(name: "Ledger", dependencies: ["Wire", "Crypto"]),
        // libuv event loop, TLS 1.3 through OpenSSL memory BIOs, framing, peer mesh, gossip.
        .target(
            name: "Transport",
            dependencies: ["Wire", "Crypto", "CLibUV", "COpenSSL", .product(name: "Logging", package: "swift-log")]),
        // SQLite: blocks, transactions, ledger state and tree, checkpoints, safety log.
        .target(name: "Storage", dependencies: ["Wire", "CSQLite"]),
        // The composition root: stores, ledger, consensus and transport wired together.
        // CALISSON_FAULTS (debug builds only): the test-only Byzantine modes (Byzantine.swift).
        .target(
            name: "Node",
            dependencies: [
                "Wire", "Crypto", "Consensus", "Ledger", "Storage", "Transport", "LightClient",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.define("CALISSON_FAULTS", .when(configuration: .debug))]),
        // What clients and the query CLI need: the client API's messages, proof checks. Light.
        .target(name: "LightClient", dependencies: ["Wire", "Crypto", "Ledger", "Storage"]),
        // A whole cluster in one thread, deterministic from a seed, with injected faults.
        .target(name: "Simulation", dependencies: ["Consensus", "Crypto", "Wire"]),

        // Thin executables.
        .executableTarget(
            name: "calisson-bench",
            dependencies: [
                "Crypto", "Wire", "Ledger", "Consensus", "Transport", "Storage", "Node", "LightClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"), .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Logging", package: "swift-log"),
            ]),

        .executableTarget(
            name: "calisson-node",
            dependencies: [
                "Node", "Ledger", "LightClient", "Storage", "Crypto", "Transport", .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.define("CALISSON_FAULTS", .when(configuration: .debug))]),
        .executableTarget(name: "calisson", dependencies: ["CalissonCLI"]),
        // The CLI's commands, a library so that their argument parsing can be fuzzed.
        .target(
            name: "CalissonCLI",
            dependencies: ["LightClient", "Ledger", "Storage", "Crypto", "Transport", "Wire", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(
            name: "calisson-sim",
            dependencies: ["Simulation", .product(name: "ArgumentParser", package: "swift-argument-parser")]),

        // Test helper: writes blocks until killed (the storage crash test).
        .executableTarget(name: "storage-crash-writer", dependencies: ["Node", "Storage", "Ledger", "Crypto", "Wire"]),

        .testTarget(name: "WireTests", dependencies: ["Wire"]),
        .testTarget(name: "CryptoTests", dependencies: ["Crypto", "Wire", "CHotPath"]),
        .testTarget(name: "ConsensusTests", dependencies: ["Consensus", "Simulation", "Crypto", "Wire"]),
        .testTarget(name: "LedgerTests", dependencies: ["Ledger", "Crypto", "Wire"]),
        .testTarget(name: "TransportTests", dependencies: ["Transport", "Crypto", "Wire", "COpenSSL"]),
        .testTarget(name: "StorageTests", dependencies: ["Storage", "Node", "Ledger", "Crypto", "Wire"]),
        .testTarget(
            name: "NodeTests",
            dependencies: ["Node", "LightClient", "Consensus", "Ledger", "Storage", "Transport", "Crypto", "Wire", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "ShimTests", dependencies: ["CLibUV", "COpenSSL", "CSQLite", "CSodium"]),
    ],
    swiftLanguageModes: [.v6]
)

// Fuzz targets (libFuzzer), only when CALISSON_FUZZ is set: `Tests/Fuzz/run` builds them
// with `--sanitize fuzzer` in their own build directory. Docs/RELIABILITY.md, "Fuzzing".
if Context.environment["CALISSON_FUZZ"] != nil {
    let fuzzTargets: [(String, [Target.Dependency])] = [
        ("frames", ["Transport", "Consensus", "Ledger", "LightClient", "Wire"]),
        ("consensus", ["Consensus", "Crypto", "Wire"]),
        ("client", ["LightClient", "Ledger", "Crypto", "Wire"]),
        ("transaction", ["Ledger", "Crypto", "Wire"]),
        ("config", ["Node", "Ledger", "Transport", "Crypto"]),
        ("tls", ["Transport", "Crypto"]),
        ("answers", ["Node", "LightClient", "Ledger", "Storage", "Transport", "Consensus", "Crypto", "Wire"]),
        ("governance", ["Ledger", "Transport", "Crypto", "Wire"]),
        ("cli", ["CalissonCLI"]),
    ]
    for (name, dependencies) in fuzzTargets {
        package.targets.append(
            .executableTarget(
                name: "fuzz-\(name)", dependencies: dependencies + ["FuzzSupport"], path: "Tests/Fuzz/\(name)",
                swiftSettings: [.unsafeFlags(["-parse-as-library"])]))
    }
    package.targets.append(.target(name: "FuzzSupport", dependencies: ["Wire", "Crypto", "Ledger"], path: "Tests/Fuzz/Support"))
}

