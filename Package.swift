// swift-tools-version:6.1
// Calisson: the permissioned clearing-house ledger of the Aix-Marseille-Provence nudge money.
// Module layout and dependency direction: Docs/ARCHITECTURE.md.
import PackageDescription

let package = Package(
    name: "Calisson",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "Wire", targets: ["Wire"]),
        .library(name: "CalissonCrypto", targets: ["CalissonCrypto"]),
        // For the micro-benchmark package (Benchmarks/): the per-transaction path.
        .library(name: "NodePath", targets: ["Node", "NodeCore", "Fixtures", "Ledger", "Consensus", "Storage"]),
        .executable(name: "calisson-bench", targets: ["calisson-bench"]),
        .executable(name: "calisson-sim", targets: ["calisson-sim"]),
        .executable(name: "calisson-node", targets: ["calisson-node"]),
        .executable(name: "calisson", targets: ["calisson"]),
        .executable(name: "calisson-gateway", targets: ["calisson-gateway"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        // The gateway: HTTP on SwiftNIO (Hummingbird 2), server code generated from Sources/Gateway/openapi.yaml.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-openapi-generator", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-openapi-runtime", from: "1.0.0"),
        .package(url: "https://github.com/hummingbird-project/swift-openapi-hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        // The gateway's graceful shutdown (Hummingbird runs on it): the event feeds end first.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.0.0"),
        // HTTPS on the gateway's listener, with optional client certificates.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.27.0"),
        // The gateway's tasks on its event loops (GatewayServer.runTasksOnEventLoops).
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.65.0"),
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
        // glibc's spawn functions that Swift's Glibc module leaves out (Sources/Spawning).
        .systemLibrary(name: "CSpawn"),

        // C kernels of the hot path: SHA-256 with SHA-NI (OpenSSL fallback), Merkle levels.
        .target(name: "CHotPath", dependencies: ["COpenSSL"]),

        // Canonical binary codec. No dependencies.
        .target(name: "Wire"),
        // Hashing, Merkle trees, Ed25519, batched verification.
        .target(name: "CalissonCrypto", dependencies: ["Wire", "CHotPath", "COpenSSL", "CSodium"]),
        // The PBFT replica as a pure state machine: no I/O, no clocks, no randomness.
        .target(name: "Consensus", dependencies: ["Wire", "CalissonCrypto"]),
        // The clearing house: tokens, programmes, clearing, governance, authenticated state. Pure.
        .target(name: "Ledger", dependencies: ["Wire", "CalissonCrypto"]),
        // libuv event loop, TLS 1.3 through OpenSSL memory BIOs, framing, peer mesh, gossip.
        .target(
            name: "Transport",
            dependencies: ["Wire", "CalissonCrypto", "CLibUV", "COpenSSL", .product(name: "Logging", package: "swift-log")]),
        // SQLite: blocks, transactions, ledger state and tree, checkpoints, safety log.
        .target(name: "Storage", dependencies: ["Wire", "CSQLite"]),
        // The node's logic as a value (replica, ledger, mempool, admission, waiters): given
        // inputs, it answers effects; the node and the simulator drive it (Docs/ARCHITECTURE.md).
        .target(name: "NodeCore", dependencies: ["Consensus", "Ledger", "LightClient", "Storage", "CalissonCrypto", "Wire"]),
        // The composition root: the shell around the core (transport, SQLite, verifier, metrics).
        // CALISSON_FAULTS (debug builds only): the test-only Byzantine modes (Byzantine.swift).
        .target(
            name: "Node",
            dependencies: [
                "Wire", "CalissonCrypto", "Consensus", "Ledger", "Storage", "Transport", "LightClient", "NodeCore",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.define("CALISSON_FAULTS", .when(configuration: .debug))]),
        // What clients and the query CLI need: the client API's messages, proof checks. Light.
        .target(name: "LightClient", dependencies: ["Wire", "CalissonCrypto", "Ledger", "Storage"]),
        // The partners' door: HTTP/JSON (OpenAPI, Hummingbird), a verified light client of the nodes.
        .target(
            name: "Gateway",
            dependencies: [
                "LightClient", "Ledger", "Consensus", "Transport", "CalissonCrypto", "Wire", "Settlement", .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"), .product(name: "OpenAPIRuntime", package: "swift-openapi-runtime"),
                .product(name: "OpenAPIHummingbird", package: "swift-openapi-hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "HummingbirdTLS", package: "hummingbird"), .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"), .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            plugins: [.plugin(name: "OpenAPIGenerator", package: "swift-openapi-generator")]),
        // Settlement files for the treasury (SEPA XML, CSV) from certified clearing.
        .target(name: "Settlement", dependencies: ["Ledger", "CalissonCrypto", "Transport"]),
        // A whole cluster in one thread, deterministic from a seed, with injected faults.
        .target(name: "Simulation", dependencies: ["Consensus", "Ledger", "NodeCore", "Fixtures", "CalissonCrypto", "Wire"]),
        // A testnet of node processes, started and driven by the benchmarks and the tests.
        .target(name: "NodeProcesses", dependencies: ["Node", "Ledger", "LightClient", "Transport", "Spawning"]),
        // Child processes started with posix_spawn (not Foundation's Process: ChildProcess.swift says why).
        .target(name: "Spawning", dependencies: ["CSpawn"]),
        // The consortia and transactions tests, the simulator and the benchmarks build.
        .target(name: "Fixtures", dependencies: ["Ledger", "CalissonCrypto", "Wire"]),

        // Thin executables.
        .executableTarget(
            name: "calisson-bench",
            dependencies: [
                "CalissonCrypto", "Wire", "Ledger", "Consensus", "Transport", "Storage", "Node", "NodeCore", "NodeProcesses", "Spawning", "Simulation", "Fixtures", "LightClient", "Gateway",
                "Settlement",
                .product(name: "ArgumentParser", package: "swift-argument-parser"), .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Logging", package: "swift-log"),
            ]),

        .executableTarget(
            name: "calisson-node",
            dependencies: [
                "Node", "Ledger", "LightClient", "Storage", "CalissonCrypto", "Transport", "Settlement", .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.define("CALISSON_FAULTS", .when(configuration: .debug))]),
        .executableTarget(name: "calisson", dependencies: ["CalissonCLI"]),
        .executableTarget(
            name: "calisson-gateway",
            dependencies: ["Gateway", "LightClient", "Ledger", "Transport", "CalissonCrypto", "Settlement", .product(name: "Logging", package: "swift-log"),
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        // The CLI's commands, a library so that their argument parsing can be fuzzed.
        .target(
            name: "CalissonCLI",
            dependencies: ["LightClient", "Ledger", "Settlement", "Storage", "CalissonCrypto", "Transport", "Wire", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(
            name: "calisson-sim",
            dependencies: ["Simulation", .product(name: "ArgumentParser", package: "swift-argument-parser")]),

        // Test helper: writes blocks until killed (the storage crash test).
        .executableTarget(name: "storage-crash-writer", dependencies: ["Node", "Storage", "Ledger", "Fixtures", "CalissonCrypto", "Wire"]),

        // What tests share: their scratch directory (removed when the test process exits),
        // waiting for a condition, a locked value, threads of their own for blocking tests.
        .target(name: "CalissonTestKit", path: "Tests/CalissonTestKit"),
        .testTarget(name: "WireTests", dependencies: ["Wire"]),
        .testTarget(name: "CalissonCryptoTests", dependencies: ["CalissonCrypto", "Wire", "CHotPath", "CalissonTestKit"]),
        .testTarget(name: "ConsensusTests", dependencies: ["Consensus", "NodeCore", "Ledger", "Fixtures", "Simulation", "CalissonCrypto", "Wire", "CalissonTestKit"]),
        .testTarget(name: "LedgerTests", dependencies: ["Ledger", "Fixtures", "CalissonCrypto", "Wire", "CalissonTestKit"]),
        .testTarget(name: "SettlementTests", dependencies: ["Settlement", "Ledger", "CalissonCrypto", "Spawning", "CalissonTestKit"]),
        .testTarget(name: "TransportTests", dependencies: ["Transport", "CalissonCrypto", "Wire", "COpenSSL", "CalissonTestKit"]),
        .testTarget(name: "StorageTests", dependencies: ["Storage", "Node", "Ledger", "Fixtures", "CalissonCrypto", "Wire", "Spawning", "CalissonTestKit"]),
        .testTarget(
            name: "NodeTests",
            dependencies: [
                "Node", "NodeProcesses", "Spawning", "LightClient", "Consensus", "Ledger", "Storage", "Transport", "CalissonCrypto", "Wire", "Gateway", "Settlement",
                "Fixtures", "CalissonTestKit", "CalissonCLI",
                .product(name: "Logging", package: "swift-log"), .product(name: "NIOEmbedded", package: "swift-nio"),
            ]),
        .testTarget(name: "ShimTests", dependencies: ["CLibUV", "COpenSSL", "CSQLite", "CSodium"]),
    ],
    swiftLanguageModes: [.v6]
)

// Fuzz targets (libFuzzer), only when CALISSON_FUZZ is set: `Tests/Fuzz/run` builds them
// with `--sanitize fuzzer` in their own build directory. Docs/RELIABILITY.md, "Fuzzing".
if Context.environment["CALISSON_FUZZ"] != nil {
    let fuzzTargets: [(String, [Target.Dependency])] = [
        ("frames", ["Transport", "Consensus", "Ledger", "LightClient", "Wire"]),
        ("consensus", ["Consensus", "CalissonCrypto", "Wire"]),
        ("client", ["LightClient", "Ledger", "CalissonCrypto", "Wire"]),
        ("transaction", ["Ledger", "CalissonCrypto", "Wire"]),
        ("config", ["Node", "Ledger", "Transport", "CalissonCrypto"]),
        ("tls", ["Transport", "CalissonCrypto"]),
        ("answers", ["Node", "LightClient", "Ledger", "Storage", "Transport", "Consensus", "CalissonCrypto", "Wire"]),
        ("governance", ["Ledger", "Transport", "CalissonCrypto", "Wire"]),
        ("cli", ["CalissonCLI"]),
    ]
    for (name, dependencies) in fuzzTargets {
        package.targets.append(
            .executableTarget(
                name: "fuzz-\(name)", dependencies: dependencies + ["FuzzSupport"], path: "Tests/Fuzz/\(name)",
                swiftSettings: [.unsafeFlags(["-parse-as-library"])]))
    }
    package.targets.append(.target(name: "FuzzSupport", dependencies: ["Wire", "CalissonCrypto", "Ledger"], path: "Tests/Fuzz/Support"))
}

