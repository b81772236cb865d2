// swift-tools-version:6.1
// Calisson's micro-benchmarks, in their own package so that the main package does not
// depend on the benchmark harness. Run from the repository root with `make benchmarks`,
// or here with `swift package --disable-sandbox benchmark`. See Docs/BENCHMARKS.md.
import PackageDescription

import struct Foundation.URL

// SwiftPM identifies a path dependency by its directory's name, which is whatever the
// repository was cloned as; derive it rather than assume it.
let calisson = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .lastPathComponent.lowercased()

let package = Package(
    name: "CalissonBenchmarks",
    dependencies: [
        .package(path: "../"),
        // Only the malloc interposer: the ARC runtime interposer crashes on these machines.
        .package(url: "https://github.com/ordo-one/benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "HotPathBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "CalissonCrypto", package: calisson),
                .product(name: "Wire", package: calisson),
            ],
            path: "Benchmarks/HotPathBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "TransactionPathBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "NodePath", package: calisson),
                .product(name: "CalissonCrypto", package: calisson),
                .product(name: "Wire", package: calisson),
            ],
            path: "Benchmarks/TransactionPathBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
