/// A link's life cycle as a value: when it last heard from its peer and last answered it,
/// the requests it is answering, its request-rate bucket, and what the transport's
/// heartbeat does with it. It has no clock: the connection passes the loop's time (in
/// milliseconds) to every call, so that tests drive time by hand (`LinkTimesTests`); a
/// time earlier than one already seen (a clock that stepped back) counts as no time
/// passing, never as an idle or dead link.
struct LinkTimes {
    /// When the last frame came in.
    private(set) var lastReceived: UInt64
    /// When the last answer went out: a long wait (a 30 s `waitFinal`, a `blocks` follow)
    /// is answered late, and the client's next request must not find it idle already.
    private(set) var lastAnswered: UInt64 = 0
    /// Requests taken and not answered yet.
    private(set) var requestsInFlight = 0
    /// The request rate's token bucket.
    private var requests: TokenBucket

    /// A link opened at `now`, its bucket full (one second of requests at `requestsPerSecond`).
    init(now: UInt64, requestsPerSecond: Int) {
        lastReceived = now
        requests = TokenBucket(now: now, burst: requestsPerSecond)
    }

    /// A frame came in.
    mutating func received(at now: UInt64) { lastReceived = max(lastReceived, now) }

    /// A request came in (its frame already `received`): taken if the rate allows it,
    /// false (and nothing counted) when the link is over `rate` requests a second. The
    /// bucket holds at most one second of requests and refills at the rate, each
    /// millisecond adding `rate` thousandths.
    mutating func takeRequest(at now: UInt64, rate: Int) -> Bool {
        guard requests.take(at: now, perSecond: rate, burst: rate) else { return false }
        requestsInFlight += 1
        return true
    }

    /// A request's answer went out.
    mutating func answered(at now: UInt64) {
        requestsInFlight = max(0, requestsInFlight - 1)
        lastAnswered = max(lastAnswered, now)
    }

    /// What the heartbeat does with a link.
    enum Beat: Equatable {
        /// Nothing: a client link still in use, or a link not established yet.
        case keep
        /// Send a heartbeat (an established link to a validator that is alive).
        case heartbeat
        /// Close a client link with nothing unanswered that sent and was sent nothing for
        /// more than the idle limit (an idle client holds a place another could use).
        case closeIdle
        /// Close a validator link that has sent nothing for more than the dead limit.
        case closeDead
    }

    /// The heartbeat's verdict at `now` on a client link (`idleLimit`) or a validator
    /// link (`deadAfter`), in milliseconds.
    func beat(now: UInt64, isClient: Bool, isEstablished: Bool, idleLimit: UInt64, deadAfter: UInt64) -> Beat {
        if isClient {
            let active = max(lastReceived, lastAnswered)
            return requestsInFlight == 0 && now >= active && now - active > idleLimit ? .closeIdle : .keep
        }
        guard isEstablished else { return .keep }
        return now >= lastReceived && now - lastReceived > deadAfter ? .closeDead : .heartbeat
    }
}
