import Foundation

/// The loop's time for clients, shared among the client links (loop thread).
///
/// A client's request is answered on the loop that also carries the consensus (votes,
/// heartbeats, blocks), and requests differ in cost by a thousandfold: a `status` against
/// 256 block summaries or a transaction's proof. So requests are priced by the time their
/// answer took, not counted. Between two sleeps of the loop (from one prepare phase to the
/// next), clients' requests take at most `budget` of it, plus the one request that passes
/// it. A client link with a whole frame to handle once that is spent, or while other links
/// wait, waits for its turn: its socket is not read, what it sent stays in its decoder, and
/// the links waiting are served one request each, in the order they began to wait, at the
/// next turns of the loop (an idle handle keeps the loop from sleeping meanwhile). One
/// client flooding the port thus gets a share like any other, and the loop goes on with
/// the consensus between shares.
final class ClientTurns {
    /// Nanoseconds of client work per turn of the loop.
    let budget: UInt64
    /// Spent since the turn began.
    private(set) var spent: UInt64 = 0
    /// The links waiting for their turn, in the order they began to wait.
    private var waiting: [Connection] = []
    private var idle: LoopIdle?

    init(loop: EventLoop, budgetMicroseconds: UInt64) {
        budget = budgetMicroseconds.multipliedReportingOverflow(by: 1_000).overflow ? .max : budgetMicroseconds * 1_000
        idle = LoopIdle(loop: loop) { [weak self] in self?.serve() }
    }

    /// A link not waiting may handle a frame now: the turn's time is not spent and no link waits.
    var allowsNewWork: Bool { spent < budget && waiting.isEmpty }

    /// The turn begins (the loop is about to look for I/O).
    func turnBegins() { spent = 0 }

    /// Runs a client's request, its time counted.
    func measure(_ work: () -> Void) {
        let start = Self.nanoseconds()
        work()
        let end = Self.nanoseconds()
        spent &+= end >= start ? end - start : 0
    }

    /// `connection` waits for its turn (`Connection.takeTurn`).
    func wait(_ connection: Connection) {
        waiting.append(connection)
        idle?.start()
    }

    /// `connection` closed: it waits no more.
    func forget(_ connection: Connection) {
        waiting.removeAll { $0 === connection }
        if waiting.isEmpty { idle?.stop() }
    }

    /// Serves the links waiting, a request each in turn, while the turn's time lasts.
    private func serve() {
        while !waiting.isEmpty, spent < budget {
            let connection = waiting.removeFirst()
            if connection.takeTurn() { waiting.append(connection) }
        }
        if waiting.isEmpty { idle?.stop() }
    }

    func close() {
        waiting = []
        idle?.close()
        idle = nil
    }

    static func nanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(clamping: time.tv_sec) &* 1_000_000_000 &+ UInt64(clamping: time.tv_nsec)
    }
}
