import Consensus
import CalissonCrypto
import Foundation
import LightClient
import Ledger
import Logging
import NodeCore
import Storage
import Synchronization
import Transport
import Wire

typealias CommitTallyCounts = Replica<NodeSigner>.CommitTally

// The node's HTTP endpoint: /metrics in the Prometheus text format and /health (loop thread).
extension NodeRuntime {
    /// `/metrics` in the Prometheus text format, `/health` 200 when the node can take part
    /// in consensus (running, and linked to enough validators of the current set that,
    /// with itself if it is one, they make a quorum), 503 otherwise.
    func http(_ path: String) -> HTTPEndpoint.Response {
        switch path {
        case "/health":
            if let failure = stoppedValue.withLock({ $0 }) { return HTTPEndpoint.Response(status: 503, body: "stopped: \(failure)\n") }
            let (reachable, quorum) = reachableValidators()
            guard reachable >= quorum else {
                return HTTPEndpoint.Response(
                    status: 503, body: "\(reachable) validators of the current set reachable (this node included if it is one); a quorum needs \(quorum)\n")
            }
            return HTTPEndpoint.Response(status: 200, body: "ok: \(reachable) validators of the current set reachable, quorum \(quorum)\n")
        case "/metrics":
            return HTTPEndpoint.Response(status: 200, contentType: "text/plain; version=0.0.4", body: metricsText())
        default:
            return HTTPEndpoint.Response(status: 404, body: "try /metrics or /health\n")
        }
    }

    /// The Prometheus text of every counter and gauge (loop thread).
    func metricsText() -> String {
        let linked = transport.linkedPeersOnLoop().count
        let counters = transport.counters
        var lines: [String] = []
        func metric(_ name: String, _ kind: String, _ help: String, _ value: some Numeric) {
            lines += ["# HELP calisson_\(name) \(help)", "# TYPE calisson_\(name) \(kind)", "calisson_\(name) \(value)"]
        }
        metric("height", "gauge", "Last executed block height.", core.ledger.height)
        metric("view", "gauge", "Consensus view within the epoch.", core.replica.view)
        metric("epoch_first_height", "gauge", "First height of the current consensus epoch.", core.replica.epoch.firstSeq)
        metric("ledger_epoch", "gauge", "Current ledger (clearing) epoch.", core.ledger.meta.epoch)
        metric("mempool_transactions", "gauge", "Transactions waiting.", core.mempool.count)
        metric("client_waits", "gauge", "Clients' waits for a transaction or a block to be final, open now (at most \(Self.waitersMax)).",
               core.waiterCount)
        metric("linked_validators", "gauge", "Validators with a live link.", linked)
        metric("admitted_total", "counter", "Transactions admitted to the mempool.", core.counters.admitted)
        metric("admission_refused_total", "counter", "Transactions refused at admission.", core.counters.refused)
        metric("blocks_executed_total", "counter", "Blocks executed since start.", core.counters.blocksExecuted)
        metric("metrics_connections_refused_total", "counter",
               "Connections to this endpoint closed at once because \(HTTPEndpoint.connectionsMax) were open.", metrics?.refusedCount ?? 0)
        lines += loopLag.lines(
            "calisson_loop_lag_seconds",
            help: "How late the consensus clock's ticks came: the loop busy that long, answering nothing (peers, clients) meanwhile.")
        metric("storage_commits_total", "counter", "Write batches committed to the database (one per turn of the loop that wrote).",
               batchesCommitted)
        let syncs = syncer.counts.withLock { $0 }
        metric("storage_wal_syncs_total", "counter", "Syncs of the WAL made off the loop, each covering the commits made before it.", syncs.syncs)
        metric("storage_wal_sync_longest_seconds", "gauge", "The longest sync of the WAL since start.", Double(syncs.longestMicroseconds) / 1_000_000)
        metric("storage_commits_unsynced", "gauge", "Commits whose effects (votes, answers) wait for their sync now.", commitsMade - commitsSynced)
        let checkpoints = store.checkpoints
        metric("storage_wal_checkpoints_total", "counter", "WAL checkpoints made by the checkpointer thread (every ~40 MiB of WAL).", checkpoints.made)
        metric("storage_wal_checkpoint_failures_total", "counter", "WAL checkpoints that failed on the checkpointer thread (the node's commits then do it).",
               checkpoints.failed)
        let keyFilter = store.keyFilterStatus
        metric("storage_key_filter_ready", "gauge", "1 once the filter of the state's keys is built (reads of absent keys then skip the table).",
               keyFilter.ready ? 1 : 0)
        metric("storage_key_filter_fill", "gauge", "Share of the key filter's bits set (a larger one is built past 0.5).", keyFilter.fill)
        metric("storage_key_filter_reads_skipped_total", "counter", "Reads of state keys the filter answered as absent, without the table.",
               keyFilter.readsSkipped)
        metric("transactions_applied_total", "counter", "Transactions applied since start.", core.counters.applied)
        metric("process_cpu_seconds_total", "counter", "CPU time used by the node process (user and system), seconds.", Double(ProcessUsage.cpuMilliseconds()) / 1_000)
        metric("transactions_rejected_total", "counter", "Transactions rejected by the ledger since start.", core.counters.rejected)
        metric("verification_dropped_total", "counter", "Messages and submissions dropped with the verifier full.", droppedForVerification)
        metric("verification_on_loop_total", "counter", "Sets of signature checks verified on the loop, the verifier idle.", checkedOnLoop)
        let cache = verifyCache.statistics
        metric("verification_cache_hits_total", "counter", "Signature checks found already verified (a transaction admitted, then in a block).", cache.hits)
        metric("verification_cache_misses_total", "counter", "Signature checks not found verified, hence verified (once per transaction and vote, ideally).",
               cache.misses)
        metric(
            "consensus_votes_unchecked_total", "counter",
            "Votes from validators dropped without checking their signature: the replica had formed their certificate.",
            core.counters.votesUnchecked)
        metric("consensus_undecodable_total", "counter", "Consensus messages from validators that did not decode.", core.counters.undecodable)
        metric("consensus_peer_verification_dropped_total", "counter",
               "Consensus messages dropped unchecked: their peer had \(core.settings.peerVerificationChecksMax) signatures, \(core.settings.peerVerificationBytesMax) bytes or \(core.settings.peerVerificationMessagesMax) messages waiting for the verifier.",
               core.counters.peerVerificationDropped)
        metric("consensus_state_requests_dropped_total", "counter",
               "Requests for blocks left unserved: a peer is served at most 8 times a tick.",
               core.replica.stateRequestsDropped)
        metric("consensus_bad_signatures_total", "counter", "Consensus messages with a signature that does not verify.", core.counters.badSignatures)
        metric("consensus_distrusted_dropped_total", "counter", "Consensus messages dropped unchecked: their peer sent a bad signature lately.",
               core.counters.distrustedDropped)
        metric("consensus_rejected_total", "counter", "Signed consensus messages the protocol rules refused (stale, out of window, conflicting).", core.counters.consensusRejected)
        metric("equivocations_total", "counter", "Conflicting signed messages from one validator (evidence).", core.counters.equivocations)
        metric("transport_frames_in_total", "counter", "Frames received.", counters.framesIn)
        metric("transport_frames_out_total", "counter", "Frames sent.", counters.framesOut)
        metric("transport_bytes_in_total", "counter", "Bytes received (TLS records).", counters.bytesIn)
        metric("transport_bytes_out_total", "counter", "Bytes sent (TLS records).", counters.bytesOut)
        metric("transport_socket_writes_total", "counter", "Writes to validator and client sockets (a loop turn's frames to a link leave in one).",
               counters.socketWrites)
        metric("transport_refused_total", "counter", "Connections refused (certificates, hellos, frames).", counters.refusedPeers)
        metric("transport_handshake_failures_total", "counter", "TLS handshakes failed.", counters.handshakeFailures)
        metric("transport_oversized_frames_total", "counter", "Frames over the size limit.", counters.oversizedFrames)
        metric("transport_malformed_frames_total", "counter", "Frames that did not decode.", counters.malformedFrames)
        metric("transport_gossip_dropped_total", "counter", "Gossip dropped for a full send queue.", counters.gossipDropped)
        metric("transport_gossip_relayed_total", "counter", "Gossip relayed to a peer its sender is not linked to.", counters.gossipRelayed)
        metric("transport_heartbeats_unread_total", "counter", "Heartbeats from validators whose payload this release does not read.", counters.heartbeatsUnread)
        metric("transport_slow_consumers_total", "counter", "Links closed for not reading.", counters.slowConsumersClosed)
        metric("transport_reconnects_total", "counter", "Redials scheduled.", counters.reconnects)
        metric("transport_refused_by_peers_total", "counter", "Links a peer refused, saying why (logged).", counters.refusedByPeers)
        metric("transport_loop_refused_total", "counter", "Sends from other threads the full event loop refused.", counters.loopRefused)
        metric("client_connections_refused_total", "counter", "Client connections refused at accept (all limits).", counters.clientConnectionsRefused)
        metric("client_connections_per_address_refused_total", "counter", "Client connections refused for the per-address limit.",
               counters.clientConnectionsPerAddressRefused)
        metric("client_idle_closed_total", "counter", "Client connections closed for idling.", counters.clientIdleClosed)
        metric("transport_peer_handshakes_dropped_total", "counter",
               "Peer-port connections closed for too many handshakes under way (a new one past its address's share, or the oldest).",
               counters.peerHandshakesDropped)
        metric("transport_peer_connections_incoming_total", "counter", "Connections that reached the peer port, before any limit.",
               counters.peerConnectionsIncoming)
        metric("client_connections_incoming_total", "counter", "Connections that reached the client port, before any limit.",
               counters.clientConnectionsIncoming)
        metric("transport_peer_accepts_refused_total", "counter",
               "Peer-port connections closed at accept: their address opened more than peerAcceptsPerSecond.", counters.peerAcceptsRefused)
        metric("client_accepts_refused_total", "counter",
               "Client connections closed at accept: their address opened more than clientAcceptsPerSecond.", counters.clientAcceptsRefused)
        metric("client_rate_limited_total", "counter", "Client connections closed for sending over the request rate.", counters.clientRateLimited)
        metric("client_turns_waited_total", "counter", "Times a client connection's requests waited for their turn of the loop's time for clients.",
               counters.clientTurnsWaited)
        metric("loop_queue_refused_total", "counter", "Work the event loop refused with its queue full.", loop.refusedFull)
        metric("loop_queue_peak", "gauge", "The most work items that waited for the event loop at once.", loop.queueCountPeak)
        let set = core.replica.epoch.validators
        metric("known_final_height", "gauge", "The highest height known final (from peers' votes and checkpoints); above calisson_height: behind.",
               max(core.ledger.height, core.replica.knownFinalSeq))
        metric("pending_validator_set_from_height", "gauge", "Height from which a scheduled validator set takes over (0: none).",
               core.replica.schedule.epochs.last.map { $0.firstSeq > core.replica.epoch.firstSeq ? $0.firstSeq : 0 } ?? 0)
        metric("recent_certificates", "gauge", "Latest blocks executed (at most 64) counted in calisson_recent_certificates_signed.",
               core.counters.recentCertificates)
        metric("recent_certificates_signed", "gauge", "Of those, blocks whose commit certificate carries this node's vote.",
               core.counters.recentCertificatesSigned)
        metric("validator_member", "gauge", "1 if this node is a validator of the current consensus epoch's set, 0 if it follows as a learner.",
               core.replica.isMember ? 1 : 0)
        metric("validator_set_size", "gauge", "Validators in the current consensus epoch's set.", set.validators.count)
        metric("quorum", "gauge", "Votes a quorum of the current set needs.", set.quorum)
        lines += validatorCommitLines()
        lines += versionLines()
        return lines.joined(separator: "\n") + "\n"
    }

    /// This node's release and rules, its linked peers' (from their hellos), the rules in
    /// force and the upgrades voted and not reached (Docs/OPERATIONS.md, "Upgrades").
    func versionLines() -> [String] {
        func escaped(_ text: String) -> String {
            text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
        }
        let ledger = core.ledger
        var lines = [
            "# HELP calisson_build_info This node's release and the newest ledger rules it executes (value 1).",
            "# TYPE calisson_build_info gauge",
            "calisson_build_info{software=\"\(Release.version)\",rules=\"\(configuration.rulesNewest)\"} 1",
            "# HELP calisson_rules_newest The newest ledger rules this node executes.",
            "# TYPE calisson_rules_newest gauge",
            "calisson_rules_newest \(configuration.rulesNewest)",
            "# HELP calisson_rules_in_force The ledger rules in force at the next block.",
            "# TYPE calisson_rules_in_force gauge",
            "calisson_rules_in_force \(ledger.rules(atHeight: ledger.height + 1))",
            "# HELP calisson_peer_rules The newest ledger rules each linked validator executes, from its hello (0: not said).",
            "# TYPE calisson_peer_rules gauge",
        ]
        for (peer, version) in transport.peerVersionsOnLoop().sorted(by: { $0.key < $1.key }) {
            lines.append("calisson_peer_rules{peer=\"\(escaped(peer))\",software=\"\(escaped(version?.software ?? ""))\"} \(version?.rules ?? 0)")
        }
        lines += [
            "# HELP calisson_upgrade_pending_height Height of each upgrade voted and not reached, by name and the rules it needs.",
            "# TYPE calisson_upgrade_pending_height gauge",
        ]
        let pending = ledger.upgrades.pending(after: ledger.height)
        for upgrade in pending {
            lines.append("calisson_upgrade_pending_height{name=\"\(upgrade.name)\",rules=\"\(upgrade.rules)\"} \(upgrade.height)")
        }
        lines += [
            "# HELP calisson_upgrade_pending_rules The ledger rules each upgrade voted and not reached needs, by name.",
            "# TYPE calisson_upgrade_pending_rules gauge",
        ]
        for upgrade in pending { lines.append("calisson_upgrade_pending_rules{name=\"\(upgrade.name)\"} \(upgrade.rules)") }
        return lines
    }

    /// Each validator's commit votes on the blocks this node committed, received in time or
    /// missed (`Replica.commitTally`), labelled with its partner id (its key's first 16 hex
    /// digits for a validator no partner holds any more).
    func validatorCommitLines() -> [String] {
        let tally = core.replica.commitTally
        let named = tally.map { key, counts in (core.partnersByValidator[key] ?? String(key.bytes.hex.prefix(16)), counts) }
            .sorted { $0.0 < $1.0 }
        var lines: [String] = []
        for (name, help, value) in [
            ("validator_commits_received_total", "Commit votes of each validator received before their block's checkpoint became stable.",
             { (counts: CommitTallyCounts) in counts.received }),
            ("validator_commits_missed_total", "Commit votes of each validator not received before their block's checkpoint became stable.",
             { (counts: CommitTallyCounts) in counts.missed }),
        ] as [(String, String, (CommitTallyCounts) -> UInt64)] {
            lines += ["# HELP calisson_\(name) \(help)", "# TYPE calisson_\(name) counter"]
            lines += named.map { "calisson_\(name){validator=\"\($0.0)\"} \(value($0.1))" }
        }
        return lines
    }

    /// Validators of the current set this node can count on now: those it is linked to,
    /// and itself if it is one; and the quorum of that set. Links to partners that are not
    /// validators of the set (removed ones, observers) do not count.
    func reachableValidators() -> (reachable: Int, quorum: Int) {
        let set = core.replica.epoch.validators
        let linked = Set(transport.linkedPeersOnLoop())
        let own = configuration.consensusKey.publicKey
        let reachable = set.validators.count { key in key == own || core.partnersByValidator[key].map(linked.contains) == true }
        return (reachable, set.quorum)
    }
}
