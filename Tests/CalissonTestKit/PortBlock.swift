import Synchronization

/// Fixed ports for the tests whose programs take a base port (`calisson-node testnet
/// --base-port`, `Cluster/local/up.sh`) rather than port 0: each test gets a hundred of
/// its own, `base ..< base + 100` and the metrics' `base + 1000 ..< base + 1100`, which no
/// other test of the run is given. All lie below the kernel's ephemeral range (32768 and
/// up), so no port the kernel hands out for port 0 or an outgoing connection is among them.
public enum PortBlock {
    /// Hundreds from 10,000: 10,000 ..< 31,000 with their metrics' hundreds above.
    private static let hundreds = 0..<210
    private static let taken = Mutex<Set<Int>>([])

    /// A base port no other test of this run was given (nor its hundred a thousand
    /// above or below, where the metrics are).
    public static func reserve() -> UInt16 {
        taken.withLock { taken in
            let free = hundreds.filter { !taken.contains($0) && !taken.contains($0 + 10) && !taken.contains($0 - 10) }
            precondition(!free.isEmpty, "PortBlock: every hundred of ports is taken")
            let chosen = free.randomElement()!
            taken.insert(chosen)
            return UInt16(10_000 + 100 * chosen)
        }
    }
}
