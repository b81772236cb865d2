/// The delays before redialling peers: per peer, exponential in the dials that failed
/// since its last link, from `minimum` up to `maximum` milliseconds, the upper half of
/// each delay random (peers that lost each other do not redial in step). A value with no
/// clock of its own: the transport keeps one and arms a timer with each delay; tests
/// drive it attempt by attempt.
struct RedialBackoff {
    let minimum: UInt64
    let maximum: UInt64
    private var failures: [String: Int] = [:]

    init(minimum: UInt64, maximum: UInt64) {
        self.minimum = minimum
        self.maximum = maximum
    }

    /// The delay before the next dial of `peer`, one more failure counted. The ceiling
    /// doubles per failure (at most 16 doublings) up to `maximum`; the delay is between
    /// half the ceiling and the ceiling.
    mutating func delay(for peer: String, using random: inout some RandomNumberGenerator) -> UInt64 {
        let failed = failures[peer, default: 0]
        failures[peer] = failed + 1
        let grown = minimum.multipliedReportingOverflow(by: 1 << UInt64(min(failed, 16)))
        let ceiling = min(maximum, grown.overflow ? .max : grown.partialValue)
        return ceiling / 2 + UInt64.random(in: 0...max(1, ceiling / 2), using: &random)
    }

    /// `peer` linked: its next failure starts from `minimum` again.
    mutating func linked(_ peer: String) { failures[peer] = nil }
}
