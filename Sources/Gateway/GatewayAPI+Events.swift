import CalissonCrypto
import Ledger
import OpenAPIRuntime
import Wire

/// `GET /v1/events`: the Server-Sent Events feed (EventFeed).
extension GatewayAPI {
    func getEvents(_ input: Operations.getEvents.Input) async throws -> Operations.getEvents.Output {
        var filter = FeedFilter()
        filter.certified = input.query.certified ?? false
        if let kinds = input.query.kind {
            var chosen = Set<FeedEvent.Kind>()
            for name in kinds.split(separator: ",") {
                guard let kind = FeedEvent.Kind(rawValue: String(name)) else {
                    return .badRequest(Problems.badRequest("kind must list transaction, governance or epoch, comma-separated (not '\(name.prefix(32))')"))
                }
                chosen.insert(kind)
            }
            guard !chosen.isEmpty else { return .badRequest(Problems.badRequest("kind lists no kind")) }
            filter.kinds = chosen
        }
        if let programme = input.query.programme {
            guard let id = Identifier(programme) else { return .badRequest(Problems.badIdentifier(programme)) }
            filter.programme = id.rawValue
        }
        if let partner = input.query.partner {
            guard let id = Identifier(partner) else { return .badRequest(Problems.badIdentifier(partner)) }
            filter.partner = id.rawValue
        }
        if let account = input.query.account {
            guard let key = Bytes32(hex: account.lowercased()) else { return .badRequest(Problems.badRequest("account must be 64 hexadecimal digits")) }
            filter.account = key.hex
        }
        let position: FeedPosition
        if let last = input.headers.Last_hyphen_Event_hyphen_ID {
            guard let resumed = FeedPosition(lastEventID: last) else {
                return .badRequest(Problems.badRequest("Last-Event-ID must be an event id of this feed, <height>.<index> (not '\(last.prefix(64))')"))
            }
            position = resumed
        } else if let from = input.query.from {
            guard let height = UInt64(exactly: from), height >= 1 else { return .badRequest(Problems.badRequest("from must be a height of 1 or more")) }
            position = FeedPosition(height: height)
        } else {
            // The next block: after the height a node reports now (the feed's head may be
            // old: it is followed only while feeds are open), once that block shows a commit
            // certificate. A node's word alone could start the feed past the chain's head,
            // and the consumer would miss the blocks in between, or at its start: when the
            // block does not hold, or is below the newest certified checkpoint, the feed
            // starts after that checkpoint instead (a few blocks already final may come
            // first; none is missed).
            let certified = pool.newestCertifiedHeight
            let reported = (try? await pool.reportedHeight()) ?? feed.head
            var head = certified
            if reported > certified, await pool.isFinal(reported) {
                head = reported
            } else if certified == 0 {
                // Nothing certified known yet (the gateway has just started): the start would be
                // the chain's first block. Asked again in a moment, it is the next one.
                return .serviceUnavailable(.init(headers: .init(Retry_hyphen_After: 2), body: .application_problem_plus_json(Problems.problem(
                    "not-ready", "Not ready", 503, "no certified checkpoint verified yet, nor a final block the nodes show: send from=<height> to start at a block"))))
            }
            position = FeedPosition(height: head.saturatingAdding(1))
        }
        let client = AccessMiddleware.client ?? ""
        if let refusal = feed.openConsumer(client: client) {
            let detail = refusal == .full
                ? "this gateway serves at most \(EventFeed.consumersMax) event feeds at once"
                : "the key '\(client)' has \(EventFeed.consumersPerClientMax) event feeds open, its most"
            return .serviceUnavailable(.init(headers: .init(Retry_hyphen_After: 10), body: .application_problem_plus_json(Problems.problem(
                "too-many-feeds", "Too many feeds", 503, detail))))
        }
        return .ok(.init(
            headers: .init(Cache_hyphen_Control: "no-store"), body: .text_event_hyphen_stream(feed.stream(from: position, filter: filter, client: client))))
    }
}
