/// A small, fast, seeded pseudo-random generator (SplitMix64, Steele et al. 2014).
///
/// **Not cryptographic.** It exists so that everything that needs randomness but must be
/// reproducible (the deterministic simulator, the consensus core's jitter, property
/// tests, benchmark inputs) draws from one seed and replays exactly. Keys and nonces
/// come from the operating system (libsodium's `randombytes`), never from here.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    public mutating func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var index = 0
        while index < count {
            var word = next()
            for _ in 0..<8 where index < count {
                out[index] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                index += 1
            }
        }
        return out
    }

    public mutating func bytes32() -> Bytes32 {
        Bytes32.filling { buffer in
            for offset in stride(from: 0, to: 32, by: 8) {
                buffer.storeBytes(of: next(), toByteOffset: offset, as: UInt64.self)
            }
        }
    }
}
