/// A token bucket on the loop's clock (milliseconds), in thousandths of a token: it holds
/// at most `burst` tokens and refills at `perSecond`, each millisecond adding `perSecond`
/// thousandths. A time earlier than one already seen (a clock that stepped back) counts as
/// no time passing. It has no clock of its own: tests drive time by hand.
struct TokenBucket {
    private var thousandths: Int
    private var at: UInt64

    /// A bucket full at `now`.
    init(now: UInt64, burst: Int) {
        thousandths = burst * 1_000
        at = now
    }

    /// Thousandths of a token held at `now`, at most `burst` tokens' worth.
    func level(at now: UInt64, perSecond: Int, burst: Int) -> Int {
        // Past the time it takes to refill from empty, more elapsed time adds nothing (and
        // cannot overflow).
        let elapsed = now >= at ? min(now - at, UInt64(clamping: burst) * 1_000 / UInt64(clamping: max(1, perSecond)) + 1) : 0
        return min(burst * 1_000, thousandths + Int(clamping: elapsed) * perSecond)
    }

    /// One token taken at `now` if there is one (true), else nothing taken (false).
    mutating func take(at now: UInt64, perSecond: Int, burst: Int) -> Bool {
        thousandths = level(at: now, perSecond: perSecond, burst: burst)
        at = max(at, now)
        guard thousandths >= 1_000 else { return false }
        thousandths -= 1_000
        return true
    }
}
