import LightClient
import Synchronization
import Wire

/// A final transaction, where its block (checked against the block's commit certificate)
/// has it.
struct FinalTransaction: Sendable, Equatable {
    let id: Bytes32
    let location: TransactionLocation
    /// The node that gave the block.
    let source: String
    /// The proposal it opened, for an applied proposal (the block's word, as its events',
    /// unless `confirmed` says otherwise).
    var proposal: UInt64? = nil
    /// What the certified state confirmed of it (from the certified events only; nil: the
    /// result and the proposal are the node's word).
    var confirmed: Confirmation? = nil

    enum Confirmation: Sendable, Equatable {
        /// The result (and the proposal it opened) confirmed at certified checkpoint
        /// `checkpoint`; `location.reason` is the checker's rendering of the committed one.
        case result(checkpoint: UInt64)
        /// The block committed no results (ledger rules before 7), as the certified state at
        /// `checkpoint` proves: the result can only be the node's word.
        case notCommitted(checkpoint: UInt64)
    }
}

/// The submissions waiting for their transaction's finality (`?wait=true`), all served by
/// one walk over the final blocks: each block is fetched once and checked once against its
/// commit certificate (the event feed's fetch and cache, shared with its consumers), and
/// every waiting transaction found in it is answered from it. A wait then costs the nodes
/// nothing of its own: no long poll per transaction on a connection of its own (a TLS
/// handshake each when they outnumber those kept), no inclusion proof and certificate
/// check per transaction.
///
/// A ticket is taken before the transaction is sent, so the walk cannot pass its block
/// unseen; a walk that starts (no ticket was waiting) starts past the newest certified
/// checkpoint. A block that no node gives although a certified checkpoint more than
/// `passedOverBelow` blocks later covers it (pruned: a node keeps at least 1,000) is passed
/// over: a transaction in it is found by its inclusion proof once its wait ends, as before.
///
/// A waiting request holds no place among those answered at once, so the tickets are
/// bounded apart: `ticketsMax` in all and `ticketsPerClientMax` per API key or certificate
/// (a client whose transactions never become final, a nonce used by other bytes, holds at
/// most that many connections 30 s each). Past either, a submission waits as it did
/// before the watch: a long poll, holding its place.
final class FinalityWatch: Sendable {
    static let ticketsMax = 4_096
    static let ticketsPerClientMax = 512
    /// How far below the newest certified checkpoint a block no node gives is passed over.
    static let passedOverBelow: UInt64 = 256

    let feed: EventFeed
    private struct State {
        var tickets: [Bytes32: [ObjectIdentifier: Ticket]] = [:]
        var count = 0
        var perClient: [String: Int] = [:]
        /// The next block the walk looks at; nil when it does not run.
        var next: UInt64?

        mutating func leave(_ client: String) {
            let left = perClient[client, default: 1] - 1
            perClient[client] = left > 0 ? left : nil
        }
    }
    private let state = Mutex(State())
    /// Waits answered from a block, and those that ended without (their time out).
    let found = Atomic<Int>(0), timedOut = Atomic<Int>(0)

    init(feed: EventFeed) { self.feed = feed }

    /// Tickets waiting now.
    var waiting: Int { state.withLock { $0.count } }

    /// One submission's wait: fulfilled by the walk, or given up.
    final class Ticket: Sendable {
        let id: Bytes32
        let client: String
        private struct Slot {
            var result: FinalTransaction?
            var continuation: CheckedContinuation<FinalTransaction?, Never>?
            var ended = false
        }
        private let slot = Mutex(Slot())

        init(id: Bytes32, client: String) {
            self.id = id
            self.client = client
        }

        /// Ends the wait with `result` (the first call only).
        fileprivate func end(_ result: FinalTransaction?) {
            let continuation = slot.withLock { slot -> CheckedContinuation<FinalTransaction?, Never>? in
                guard !slot.ended else { return nil }
                slot.ended = true
                slot.result = result
                defer { slot.continuation = nil }
                return slot.continuation
            }
            continuation?.resume(returning: result)
        }

        /// The result, once the wait ended (at once when it did already).
        fileprivate func value() async -> FinalTransaction? {
            await withCheckedContinuation { continuation in
                let ended = slot.withLock { slot -> FinalTransaction?? in
                    if slot.ended { return .some(slot.result) }
                    slot.continuation = continuation
                    return .none
                }
                if let ended { continuation.resume(returning: ended) }
            }
        }
    }

    /// A ticket for transaction `id`, taken for `client` before it is sent; nil when
    /// `ticketsMax` wait, or `ticketsPerClientMax` of the client's, or when no certified
    /// checkpoint is known yet to start the walk from (the submission then waits as it did
    /// before the watch: a long poll to the node that admitted it).
    func take(_ id: Bytes32, client: String) -> Ticket? {
        let ticket = Ticket(id: id, client: client)
        let certified = feed.pool.newestCertifiedHeight
        let start = state.withLock { state -> Bool? in
            guard state.count < Self.ticketsMax, state.perClient[client, default: 0] < Self.ticketsPerClientMax,
                state.next != nil || certified > 0
            else { return nil }
            state.tickets[id, default: [:]][ObjectIdentifier(ticket)] = ticket
            state.count += 1
            state.perClient[client, default: 0] += 1
            guard state.next == nil else { return false }
            // The walk starts past the newest certified checkpoint: a quorum signed it, so
            // no block after it is final yet for this transaction, sent after this (only a
            // transaction final before it was sent, a retry, is in an earlier block: the
            // submission looks for it by its inclusion proof). It walks a few blocks
            // already final first.
            state.next = certified.saturatingAdding(1)
            return true
        }
        guard let start else { return nil }
        if start {
            feed.walkers.add(1, ordering: .relaxed)  // the feed's follower moves the head meanwhile
            Task { await walk() }
        }
        return ticket
    }

    /// Waits for `ticket`'s transaction in a final block, at most `milliseconds`; nil when
    /// none had it by then (or the task was cancelled). The ticket is given back.
    func wait(_ ticket: Ticket, milliseconds: Int) async -> FinalTransaction? {
        let timer = Task {
            try? await Task.sleep(for: .milliseconds(milliseconds))
            ticket.end(nil)
        }
        let result = await withTaskCancellationHandler {
            await ticket.value()
        } onCancel: {
            ticket.end(nil)
        }
        timer.cancel()
        forget(ticket)
        if result == nil { timedOut.add(1, ordering: .relaxed) } else { found.add(1, ordering: .relaxed) }
        return result
    }

    /// Gives a ticket back (its wait ended, or its transaction was not sent).
    func forget(_ ticket: Ticket) {
        state.withLock { state in
            guard state.tickets[ticket.id]?.removeValue(forKey: ObjectIdentifier(ticket)) != nil else { return }
            state.count -= 1
            state.leave(ticket.client)
            if state.tickets[ticket.id]?.isEmpty == true { state.tickets[ticket.id] = nil }
        }
        ticket.end(nil)
    }

    /// Walks the final blocks from `next` while tickets wait, answering those found.
    private func walk() async {
        while true {
            let next = state.withLock { state -> UInt64? in
                guard state.count > 0, let next = state.next else {
                    state.next = nil
                    return nil
                }
                return next
            }
            guard let next else {
                feed.walkers.subtract(1, ordering: .relaxed)
                return
            }
            if next > feed.head {
                // The feed's follower moves the head (it runs while tickets wait).
                _ = await feed.waitForHead(beyond: next - 1, seconds: 1)
                if next > feed.head { continue }
            }
            let events: [FeedEvent]?
            do { events = try await feed.events(at: next) } catch {
                try? await Task.sleep(for: .milliseconds(200))  // no node gave a block that holds: ask again
                continue
            }
            guard let events else {
                if next.saturatingAdding(Self.passedOverBelow) < feed.pool.newestCertifiedHeight {
                    state.withLock { $0.next = next.saturatingAdding(1) }  // pruned everywhere: passed over
                } else {
                    try? await Task.sleep(for: .milliseconds(100))  // the head said final, the nodes asked do not have it yet
                }
                continue
            }
            let ended = state.withLock { state -> [(Ticket, FinalTransaction)] in
                state.next = next.saturatingAdding(1)
                var ended: [(Ticket, FinalTransaction)] = []
                for event in events {
                    guard let final = event.final, let tickets = state.tickets.removeValue(forKey: final.id) else { continue }
                    state.count -= tickets.count
                    for ticket in tickets.values { state.leave(ticket.client) }
                    ended += tickets.values.map { ($0, final) }
                }
                return ended
            }
            for (ticket, final) in ended { ticket.end(final) }
        }
    }
}
