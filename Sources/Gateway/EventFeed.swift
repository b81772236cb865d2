import CalissonCrypto
import Foundation
import Ledger
import LightClient
import OpenAPIRuntime
import Synchronization
import Wire

/// One event of the feed: where it is (`height.index`), what it is, what the filters
/// match it on, and its `data` line (JSON).
struct FeedEvent: Sendable, Equatable {
    enum Kind: String, Sendable, CaseIterable {
        case transaction, governance, epoch
    }
    let height: UInt64
    let index: Int
    let kind: Kind
    let programmes: [String]
    let partners: [String]
    let accounts: [String]
    let data: String
    /// A transaction event's transaction and where it is (its inclusion checked with its
    /// block), for the submissions waiting for it (`FinalityWatch`).
    var final: FinalTransaction? = nil

    var id: String { "\(height).\(index)" }

    /// What it holds in memory, about (its data, its filters' strings, the rest).
    var byteCount: Int { data.utf8.count + (programmes + partners + accounts).reduce(0) { $0 + $1.utf8.count + 16 } + 128 }

    /// The event as the stream carries it.
    var text: String { "id: \(id)\nevent: \(kind.rawValue)\ndata: \(data)\n\n" }
}

/// What a consumer asked to see. Programme, partner and account select transactions;
/// governance and epoch events have none of them and are sent when their kind is.
struct FeedFilter: Sendable {
    var kinds = Set(FeedEvent.Kind.allCases)
    /// Each block's events only once the certified state confirms them
    /// (`NodePool.certifiedBlockContents`), each carrying the checkpoint that did.
    var certified = false
    var programme: String?
    var partner: String?
    var account: String?

    func admits(_ event: FeedEvent) -> Bool {
        guard kinds.contains(event.kind) else { return false }
        guard event.kind == .transaction else { return true }
        if let programme, !event.programmes.contains(programme) { return false }
        if let partner, !event.partners.contains(partner) { return false }
        if let account, !event.accounts.contains(account) { return false }
        return true
    }
}

/// A position in the feed: the next event to send is the first of block `height` after
/// index `after` (nil: the block's first).
struct FeedPosition: Sendable, Equatable {
    var height: UInt64
    var after: Int?

    /// After the event `id` (`<height>.<index>`), or nil when `id` is not one.
    init?(lastEventID id: String) {
        let parts = id.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let height = UInt64(parts[0]), height >= 1, height <= UInt64.max >> 1,
            let index = Int(parts[1]), index >= 0
        else { return nil }
        self.height = height
        after = index
    }

    init(height: UInt64) {
        self.height = height
        after = nil
    }
}

/// The gateway's feed of final blocks: it follows the chain's head (one long poll at a
/// time for all consumers), keeps the newest checked blocks' events, and streams them
/// to each consumer from its own position, never skipping: a block no node gives a
/// checked answer for is asked again, a consumer too slow for its buffer has its stream
/// ended after the last event it was given.
final class EventFeed: Sendable {
    /// Feeds open at once; past it a new one is refused (503).
    static let consumersMax = 256
    /// Events queued for one consumer, at most: past them the feed waits for the consumer's
    /// connection to take some (a consumer catching up from far behind reads as fast as its
    /// connection goes, however many events wait).
    static let bufferedEventsMax = 1_024
    /// A consumer whose connection takes no event for this long while its buffer is full is
    /// too slow: its stream ends after the last event it was given.
    static let slowSeconds = 10
    /// Bytes queued for one consumer, at most (one event past it when none waits): a
    /// proposal's event is some 9 KB, so the count alone let 256 consumers hold gigabytes.
    static let bufferedBytesMax = 1 << 20
    static let keepAliveSeconds = 15
    /// Blocks a feed walks without writing anything before it writes a comment (`produce`).
    static let quietBlocksMax = 16
    /// Blocks whose events are kept for the feeds, at most, and their events' bytes: a block
    /// of large transactions has megabytes of events.
    static let cachedBlocksMax = 512
    static let cachedBytesMax = 64 << 20
    /// The same for the certified events (`FeedFilter.certified`), fewer: a feed of them
    /// runs a checkpoint interval behind the head, so its consumers need fewer blocks kept.
    static let certifiedCachedBlocksMax = 128
    static let certifiedCachedBytesMax = 16 << 20

    let pool: NodePool
    /// Blocks' events kept for the feeds, and those being fetched (one request per block for
    /// all the feeds: the first asks, the others wait for it).
    private struct Cache {
        var events: [UInt64: [FeedEvent]] = [:]
        var bytes = 0
        var fetching: [UInt64: Task<[FeedEvent]?, any Error>] = [:]
    }
    private struct State {
        var head: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter: UInt64 = 0
        /// The events as the nodes' checked contents give them, and as the certified state
        /// confirms them.
        var cache = Cache()
        var certifiedCache = Cache()

        mutating func cache<T>(certified: Bool, _ body: (inout Cache) -> T) -> T {
            certified ? body(&certifiedCache) : body(&cache)
        }
        var consumers = 0
        var perClient: [String: Int] = [:]
        /// The open streams' producers, to end them at a shutdown (`closeAll`).
        var producers: [UInt64: Task<Void, Never>] = [:]
        var nextProducer: UInt64 = 0
        var closed = false
    }
    private let state = Mutex(State())
    private let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()
    let sentEvents = Atomic<Int>(0)
    let slowConsumersClosed = Atomic<Int>(0)
    /// Walks over the final blocks besides the feeds' (`FinalityWatch`'s): the head is
    /// followed while any runs.
    let walkers = Atomic<Int>(0)

    init(pool: NodePool) { self.pool = pool }

    var head: UInt64 { state.withLock { $0.head } }
    var consumers: Int { state.withLock { $0.consumers } }

    /// Follows the chain's head until cancelled, while any feed is open or a finality walk
    /// runs: a node's word,
    /// used only to know when to ask for the next block (what is sent is checked block by
    /// block).
    func follow() async {
        while !Task.isCancelled {
            // Nobody reads or waits: ask the nodes nothing.
            guard consumers > 0 || walkers.load(ordering: .relaxed) > 0 else {
                try? await Task.sleep(for: .milliseconds(50))
                continue
            }
            if head == 0, let reported = try? await pool.reportedHeight() { advance(to: reported) }
            let next = head.saturatingAdding(1)
            if let height = await pool.waitBlocks(from: next, milliseconds: 10_000), height >= next {
                advance(to: height)
            } else {
                try? await Task.sleep(for: .milliseconds(200))  // no node answers: do not spin
            }
        }
    }

    /// How far past the newest certified checkpoint known the head may be said to be: a
    /// lying node could otherwise set it at 2^64 − 1, and every feed would poll for blocks
    /// that do not exist instead of waiting (the true head is a few dozen blocks ahead).
    static let headAheadOfCertifiedMax: UInt64 = 4_096

    func advance(to reported: UInt64) {
        let height = min(reported, pool.newestCertifiedHeight.saturatingAdding(Self.headAheadOfCertifiedMax))
        let woken = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard height > state.head else { return [] }
            state.head = height
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in woken { waiter.resume() }
    }

    /// Waits until the head passes `height` or `seconds` pass; whether it did.
    func waitForHead(beyond height: UInt64, seconds: Int) async -> Bool {
        if head > height { return true }
        let id = state.withLock { state -> UInt64 in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        let timer = Task { [self] in
            try? await Task.sleep(for: .seconds(seconds))
            wake(id)
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let passed = state.withLock { state -> Bool in
                    if state.head > height { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if passed { continuation.resume() }
            }
        } onCancel: { [self] in wake(id) }
        timer.cancel()
        return head > height
    }

    private func wake(_ id: UInt64) {
        state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
    }

    /// Block `height`'s events, checked (from the cache, or from the nodes); nil when no
    /// node has the block final yet. `certified`: as the certified state confirms them
    /// (throws `NotYetCertified` until a checkpoint at or above the block is known).
    func events(at height: UInt64, certified: Bool = false) async throws -> [FeedEvent]? {
        enum Found {
            case cached([FeedEvent])
            case fetching(Task<[FeedEvent]?, any Error>)
        }
        let (blocksMax, bytesMax) = certified ? (Self.certifiedCachedBlocksMax, Self.certifiedCachedBytesMax) : (Self.cachedBlocksMax, Self.cachedBytesMax)
        let found = state.withLock { $0.cache(certified: certified) { current -> Found in
            if let cached = current.events[height] { return .cached(cached) }
            if let running = current.fetching[height] { return .fetching(running) }
            let task = Task { [self] () -> [FeedEvent]? in
                defer { _ = state.withLock { $0.cache(certified: certified) { $0.fetching.removeValue(forKey: height) } } }
                let events: [FeedEvent]
                if certified {
                    guard let confirmed = try await pool.certifiedBlockContents(height) else { return nil }
                    events = try Self.events(of: confirmed.found, certified: confirmed, encoder: encoder)
                    // Contents the state refuted may have been cached as they came: ask again.
                    if !confirmed.refuted.isEmpty { state.withLock { Self.forget(height, in: &$0.cache) } }
                } else {
                    guard let found = try await pool.blockContents(height) else { return nil }
                    events = try Self.events(of: found, encoder: encoder)
                }
                state.withLock { $0.cache(certified: certified) { cache in
                    if cache.events[height] == nil {
                        cache.events[height] = events
                        cache.bytes += events.reduce(0) { $0 + $1.byteCount }
                    }
                    Self.trim(&cache.events, bytes: &cache.bytes, blocksMax: blocksMax, bytesMax: bytesMax)
                } }
                return events
            }
            current.fetching[height] = task
            return .fetching(task)
        } }
        switch found {
        case let .cached(events): return events
        case let .fetching(task): return try await task.value
        }
    }

    private static func forget(_ height: UInt64, in cache: inout Cache) {
        cache.bytes -= cache.events.removeValue(forKey: height)?.reduce(0) { $0 + $1.byteCount } ?? 0
    }

    /// Feeds open at once for one client (API key or certificate): one client cannot
    /// take every place.
    static let consumersPerClientMax = 32

    /// Why a feed was not opened.
    enum Refusal: Error, Equatable {
        case full, clientFull
    }

    /// Takes a consumer's place for `client`, or says why not (`consumersMax` open, or
    /// `consumersPerClientMax` for this client).
    func openConsumer(client: String) -> Refusal? {
        state.withLock { state in
            guard state.consumers < Self.consumersMax else { return .full }
            guard state.perClient[client, default: 0] < Self.consumersPerClientMax else { return .clientFull }
            state.consumers += 1
            state.perClient[client, default: 0] += 1
            return nil
        }
    }

    func closeConsumer(client: String) {
        state.withLock { state in
            state.consumers -= 1
            state.perClient[client, default: 1] -= 1
            if state.perClient[client] == 0 { state.perClient[client] = nil }
        }
    }

    /// The stream for one consumer, from `position`, through `filter`. Its place must have
    /// been taken (`openConsumer`); it is given back when the stream ends.
    func stream(from position: FeedPosition, filter: FeedFilter, client: String) -> HTTPBody {
        let (stream, continuation) = AsyncStream.makeStream(of: HTTPBody.ByteChunk.self, bufferingPolicy: .bufferingOldest(Self.bufferedEventsMax))
        let number = state.withLock { state -> UInt64 in
            state.nextProducer += 1
            return state.nextProducer
        }
        // Events the consumer's connection has taken from the buffer.
        let taken = Counter()
        let producer = Task { [self] in
            defer {
                // The consumer's place is given back before its stream is seen to end.
                closeConsumer(client: client)
                _ = state.withLock { $0.producers.removeValue(forKey: number) }
                continuation.finish()
            }
            var given = 0, givenBytes = 0
            await produce(from: position, filter: filter) { text in
                guard await Self.room(given: given, givenBytes: givenBytes, taken: taken) else { return false }
                switch continuation.yield(ArraySlice(text.utf8)) {
                case .enqueued:
                    given += 1
                    givenBytes += text.utf8.count
                    return true
                case .dropped, .terminated: return false
                @unknown default: return false
                }
            }
        }
        let closed = state.withLock { state -> Bool in
            if !state.closed { state.producers[number] = producer }
            return state.closed
        }
        if closed { producer.cancel() }
        continuation.onTermination = { _ in producer.cancel() }
        let counted = stream.map { chunk in
            taken.value.add(1, ordering: .relaxed)
            taken.bytes.add(chunk.count, ordering: .relaxed)
            return chunk
        }
        return HTTPBody(counted, length: .unknown, iterationBehavior: .single)
    }

    /// What a consumer's connection took from its buffer: events, and their bytes.
    final class Counter: Sendable {
        let value = Atomic<Int>(0)
        let bytes = Atomic<Int>(0)
    }

    /// Waits until a consumer's buffer has room for one more event (`given` so far, of
    /// `givenBytes`; `taken` by its connection): fewer than `bufferedEventsMax` events and
    /// `bufferedBytesMax` bytes waiting. True then, false if its connection took none for
    /// `slowSeconds` (too slow) or the task is cancelled.
    static func room(given: Int, givenBytes: Int = 0, taken: Counter, slowSeconds: Int = EventFeed.slowSeconds) async -> Bool {
        var seen = taken.value.load(ordering: .relaxed)
        var since = ContinuousClock.now
        // Looked at again after 10 ms, then less often while nothing is taken (up to 200 ms):
        // a feed whose consumer reads slowly does not wake its producer 100 times a second.
        var pause = 10
        while given - taken.value.load(ordering: .relaxed) >= bufferedEventsMax
            || givenBytes - taken.bytes.load(ordering: .relaxed) >= bufferedBytesMax {
            guard !Task.isCancelled else { return false }
            let now = taken.value.load(ordering: .relaxed)
            if now != seen {
                seen = now
                since = .now
                pause = 10
            } else if ContinuousClock.now - since > .seconds(slowSeconds) {
                return false
            } else {
                pause = min(200, pause * 2)
            }
            try? await Task.sleep(for: .milliseconds(pause))
        }
        return true
    }

    /// Ends every open stream after the events it was given (the gateway stops: a stream
    /// would otherwise hold the server's graceful shutdown until its next keep-alive, or
    /// until its consumer leaves); streams opened later end at once. A consumer resumes
    /// elsewhere, or later, with `Last-Event-ID`.
    func closeAll() {
        let producers = state.withLock { state -> [Task<Void, Never>] in
            state.closed = true
            return Array(state.producers.values)
        }
        for producer in producers { producer.cancel() }
    }

    /// Writes events from `position` until `send` refuses one (the consumer left, or is too
    /// slow: its stream ends after the last event it was given) or the task is cancelled.
    func produce(from position: FeedPosition, filter: FeedFilter, send: (String) async -> Bool) async {
        var position = position
        var quietBlocks = 0
        var waitingSaid = ContinuousClock.now
        // The pause between two looks for a certified checkpoint above the block: 250 ms,
        // doubled while none comes, up to 1 s (a checkpoint comes every few blocks; many
        // feeds waiting at the head ask little of the gateway).
        var notYetPause = 250
        guard await send("retry: 2000\n" + Self.comment("events from block \(position.height)\(filter.certified ? ", each once the certified state confirms it" : "")")) else { return }
        while !Task.isCancelled {
            if position.height > head {
                if !(await waitForHead(beyond: position.height - 1, seconds: Self.keepAliveSeconds)) {
                    guard !Task.isCancelled, await send(Self.comment("waiting for block \(position.height)")) else { return }
                    continue
                }
            }
            let events: [FeedEvent]?
            do { events = try await self.events(at: position.height, certified: filter.certified) } catch let notYet as NotYetCertified {
                // Certified events: the block waits for a checkpoint at or above it (a few
                // blocks, and the gateway's next refresh), said every `keepAliveSeconds`.
                if ContinuousClock.now - waitingSaid > .seconds(Self.keepAliveSeconds) {
                    waitingSaid = .now
                    guard await send(Self.comment("waiting for a certified checkpoint at or above block \(notYet.height) (newest read: \(notYet.checkpoint))")) else { return }
                }
                try? await Task.sleep(for: .milliseconds(notYetPause))
                notYetPause = min(1_000, notYetPause * 2)
                continue
            } catch {
                // No node gave a block that holds: say so, and ask again (never skip it).
                guard await send(Self.comment("block \(position.height): no checked answer yet (\(String(describing: error).prefix(300)))")) else { return }
                try? await Task.sleep(for: .seconds(2))
                continue
            }
            guard let events else {
                // Below a certified checkpoint the block is final: no node giving it means the
                // nodes pruned it (or those that keep it do not answer). Say so and end; the
                // stream cannot go on without a gap.
                if position.height < pool.newestCertifiedHeight {
                    _ = await send(Self.comment("no node this gateway follows gives block \(position.height) (pruned, or the nodes keeping it do not answer): the feed stops here; resume with Last-Event-ID"))
                    return
                }
                // The head said final, the nodes asked do not have it yet.
                guard await send(Self.comment("waiting for block \(position.height)")) else { return }
                try? await Task.sleep(for: .milliseconds(500))
                continue
            }
            var sent = false
            for event in events where event.index > (position.after ?? -1) && filter.admits(event) {
                guard await send(event.text) else {
                    if !Task.isCancelled { slowConsumersClosed.add(1, ordering: .relaxed) }
                    return
                }
                sent = true
                sentEvents.add(1, ordering: .relaxed)
            }
            // A filter that matches nothing for long still writes, every `quietBlocksMax`
            // blocks: the walk then goes at the pace its consumer reads (a consumer that
            // stopped reading stops it within its buffer; one that left, at once).
            quietBlocks = sent ? 0 : quietBlocks + 1
            if quietBlocks >= Self.quietBlocksMax {
                quietBlocks = 0
                guard await send(Self.comment("at block \(position.height)")) else { return }
            }
            position = FeedPosition(height: position.height + 1)
            notYetPause = 250
        }
    }

    /// A comment of the stream (`: text`, then the blank line): on one line whatever `text`
    /// holds. A node's error text is quoted in some: a line break in it would end the
    /// comment and let the node write fields of its own (`id:`, `data:`), a forged event.
    static func comment(_ text: String) -> String { ": \(RefusalLog.oneLine(text))\n\n" }

    /// Drops the oldest blocks' events while the cache holds more than `cachedBlocksMax`
    /// blocks or `cachedBytesMax` bytes (`bytes`, kept up to date).
    static func trim(_ cache: inout [UInt64: [FeedEvent]], bytes: inout Int, blocksMax: Int = cachedBlocksMax, bytesMax: Int = cachedBytesMax) {
        while cache.count > blocksMax || (bytes > bytesMax && !cache.isEmpty), let oldest = cache.keys.min() {
            bytes -= cache.removeValue(forKey: oldest)?.reduce(0) { $0 + $1.byteCount } ?? 0
        }
    }

    // MARK: Events of a block

    /// `certified`: what the certified state confirmed of `found` (its checkpoint on every
    /// event, the results as the checker renders them).
    static func events(of found: VerifiedBlockContents, certified: CertifiedBlockContents? = nil, encoder: JSONEncoder) throws -> [FeedEvent] {
        let height = found.contents.height
        let checkpoint = certified.map { GatewayAPI.int($0.checkpoint) }
        var events: [FeedEvent] = []
        let opened = Dictionary(found.contents.opened.map { ($0.position, $0.proposal) }, uniquingKeysWith: { first, _ in first })
        func json(_ value: some Encodable) throws -> String { String(decoding: try encoder.encode(value), as: UTF8.self) }
        for (position, (command, result)) in zip(found.block.commands, found.contents.results).enumerated() {
            let id = SignedTransaction.idTag.hash(command)
            var event = Components.Schemas.TransactionEvent(
                id: id.hex, height: GatewayAPI.int(height), position: Int64(position), kind: .undecodable,
                result: StoreAnswers.isApplied(result) ? .applied : .rejected, reason: StoreAnswers.reason(result))
            if let certified {
                event.checkpoint = checkpoint
                event.resultVerified = certified.reasons != nil
                if let reasons = certified.reasons { event.reason = reasons[position] }
            }
            var programmes: [String] = [], partners: [String] = [], accounts: [String] = []
            if let signed = try? SignedTransaction(wireBytes: command) {
                let transaction = signed.transaction
                event.nonce = GatewayAPI.int(transaction.nonce)
                switch transaction.signer {
                case let .partner(partner):
                    event.signerPartner = partner.rawValue
                    partners.append(partner.rawValue)
                case let .citizen(account): event.signerAccount = account.bytes.hex
                }
                switch transaction.body {
                case let .attribute(programme, account, units, evidence):
                    (event.kind, event.programme, event.account, event.units, event.evidence) =
                        (.attribute, programme.rawValue, account.bytes.hex, Int64(units), evidence.hex)
                    programmes.append(programme.rawValue)
                case let .redeem(acceptor, amount, service):
                    (event.kind, event.acceptor, event.amount, event.service) = (.redeem, acceptor.rawValue, GatewayAPI.int(amount), service.hex)
                    partners.append(acceptor.rawValue)
                case let .transfer(to, programme, amount):
                    (event.kind, event.to, event.programme, event.amount) = (.transfer, to.bytes.hex, programme.rawValue, GatewayAPI.int(amount))
                    programmes.append(programme.rawValue)
                case let .propose(action, deadline):
                    (event.kind, event.action, event.deadline) = (.propose, "\(action)", GatewayAPI.int(deadline))
                    event.proposal = opened[UInt64(position)].map(GatewayAPI.int)
                case let .vote(proposal, approve):
                    (event.kind, event.proposal, event.approve) = (.vote, GatewayAPI.int(proposal), approve)
                case .reportEquivocation:
                    event.kind = .reportEquivocation
                case .setEndpoints:
                    event.kind = .setEndpoints
                }
                accounts = transaction.accounts.map(\.bytes.hex)
            }
            var location = StoreAnswers.location(height: height, position: position, result: result)
            var confirmed: FinalTransaction.Confirmation?
            if let certified {
                if let reasons = certified.reasons {
                    location = TransactionLocation(height: height, position: location.position, applied: location.applied, reason: reasons[position])
                    confirmed = .result(checkpoint: certified.checkpoint)
                } else {
                    confirmed = .notCommitted(checkpoint: certified.checkpoint)
                }
            }
            events.append(FeedEvent(
                height: height, index: events.count, kind: .transaction, programmes: programmes, partners: partners, accounts: accounts,
                data: try json(event),
                final: FinalTransaction(
                    id: id, location: location, source: found.source, proposal: location.applied ? opened[location.position] : nil, confirmed: confirmed)))
        }
        for record in found.contents.decided {
            let proposal: Proposal
            do { proposal = try Proposal(wireBytes: record) } catch {
                throw CertifiedReadError.answer("block \(height): a decided proposal's record does not decode: \(error)")
            }
            let status: Components.Schemas.GovernanceEvent.statusPayload
            var reason: String?
            switch proposal.status {
            case .open: throw CertifiedReadError.answer("block \(height): proposal \(proposal.id) is listed as decided but is open")
            case .passed: status = .passed
            case .rejected: status = .rejected
            case let .failed(_, why): (status, reason) = (.failed, why)
            }
            let event = Components.Schemas.GovernanceEvent(
                proposal: GatewayAPI.int(proposal.id), height: GatewayAPI.int(height), proposer: proposal.proposer.rawValue, action: "\(proposal.action)",
                status: status, reason: reason, yes: proposal.yes.map(\.rawValue), no: proposal.no.map(\.rawValue), checkpoint: checkpoint)
            events.append(FeedEvent(height: height, index: events.count, kind: .governance, programmes: [], partners: [], accounts: [], data: try json(event)))
        }
        if let epoch = found.contents.closedEpoch {
            let event = Components.Schemas.EpochEvent(epoch: GatewayAPI.int(epoch), height: GatewayAPI.int(height), checkpoint: checkpoint)
            events.append(FeedEvent(height: height, index: events.count, kind: .epoch, programmes: [], partners: [], accounts: [], data: try json(event)))
        }
        return events
    }
}
