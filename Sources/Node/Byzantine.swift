#if CALISSON_FAULTS
// Test-only misbehaviour for the chaos runs (Docs/RELIABILITY.md, "Byzantine validator").
// Compiled only where CALISSON_FAULTS is defined: Package.swift defines it for the debug
// configuration alone, so a release build has neither this type nor the `--byzantine`
// option of `calisson-node run`. The node stays a correct process (it persists, executes,
// answers clients); what changes is what it sends to the other validators, signed with
// its own key as a real attacker holding that key would.
import Consensus
import CalissonCrypto
import NodeCore
import Wire

/// What a Byzantine validator does to its peers.
public enum ByzantineMode: String, CaseIterable, Sendable {
    /// As primary, proposes one block to one peer and a variant to the others for the
    /// same slot (and, every other slot, both to the first), and votes accordingly.
    case equivocate
    /// Besides its honest traffic, sends random consensus payloads, its own messages with
    /// a bit flipped, truncated messages, and random gossip.
    case garbage
    /// Besides its honest traffic, re-sends old signed messages (its own and its peers').
    case replay
    /// Never sends its prepare, commit or checkpoint votes.
    case withhold
}

/// Rewrites a node's outgoing consensus traffic according to a `ByzantineMode`: a filter
/// between the node's core and the effects the shell carries out.
struct ByzantineShell {
    let mode: ByzantineMode
    let signer: NodeSigner
    let chainId: String
    var random: SplitMix64
    /// Signed messages seen (sent or received), for `replay`.
    private var recorded: [[UInt8]] = []
    private var recordedNext = 0
    static let recordedMax = 4_096

    init(mode: ByzantineMode, signer: NodeSigner, chainId: String, seed: UInt64) {
        self.mode = mode
        self.signer = signer
        self.chainId = chainId
        random = SplitMix64(seed: seed)
    }

    /// The core's effects as this mode sends them: consensus messages rewritten (to one
    /// peer, or to every one of `peers`), catch-up traffic and every other effect as it is.
    mutating func rewrite(_ effects: [NodeEffect], peers: [String]) -> [NodeEffect] {
        var rewritten: [NodeEffect] = []
        for effect in effects {
            switch effect {
            case .send(.stateRequest, _), .send(.stateResponse, _):
                rewritten.append(effect)  // catch-up traffic goes as it is (and is not recorded)
            case let .send(message, peer):
                rewritten += outgoing(message, to: [peer]).map { NodeEffect.sendFrame($0.payload, gossip: false, to: $0.peer) }
            case let .broadcast(message):
                rewritten += outgoing(message, to: peers).map { NodeEffect.sendFrame($0.payload, gossip: false, to: $0.peer) }
            default:
                rewritten.append(effect)
            }
        }
        return rewritten
    }

    /// What goes to each of `peers` instead of `message`: (peer, consensus payload) pairs.
    mutating func outgoing(_ message: Message, to peers: [String]) -> [(peer: String, payload: [UInt8])] {
        let bytes = message.wireBytes
        record(bytes)
        switch mode {
        case .withhold:
            switch message {
            case .vote, .checkpoint:
                return []
            default:
                return peers.map { ($0, bytes) }
            }
        case .equivocate:
            guard peers.count > 1 else { return peers.map { ($0, bytes) } }
            switch message {
            case let .prePrepare(signed):
                // The honest block to the first peer, a variant to the others, which with
                // this node's own vote are a quorum for it: the first peer must then give
                // up the block it prepared and catch up. Every other slot, the first peer
                // also gets the variant (conflicting proposals it can prove).
                let variant = Block(seq: signed.body.seq, commands: signed.body.block.commands + [random.bytes(16)])
                let forgedProposal = Message.prePrepare(Signed(PrePrepare(view: signed.body.view, block: variant), chainId: chainId, signer: signer))
                    .wireBytes
                alternatives[signed.body.seq] = (honest: signed.body.block.digest, variant: variant.digest)
                var frames = peers.enumerated().map { index, peer in (peer: peer, payload: index == 0 ? bytes : forgedProposal) }
                if signed.body.seq % 2 == 1 { frames.append((peers[0], forgedProposal)) }
                return frames
            case let .vote(signed):
                // Votes for the variant to those that got it, for the honest block to the first.
                guard let slot = alternatives[signed.body.seq], slot.honest == signed.body.digest else {
                    // A slot it did not propose (another leads this view: a view change under
                    // load moved on from it): every other slot, a second vote for another
                    // digest to the first peer, which can prove it. Evidence then comes
                    // whoever leads.
                    var frames = peers.map { (peer: $0, payload: bytes) }
                    if signed.body.seq % 2 == 1 {
                        let other = Vote(kind: signed.body.kind, view: signed.body.view, seq: signed.body.seq, digest: SHA256.hash(random.bytes(16)))
                        frames.append((peers[0], Message.vote(Signed(other, chainId: chainId, signer: signer)).wireBytes))
                    }
                    return frames
                }
                let vote = Vote(kind: signed.body.kind, view: signed.body.view, seq: signed.body.seq, digest: slot.variant)
                let forgedVote = Message.vote(Signed(vote, chainId: chainId, signer: signer)).wireBytes
                return peers.enumerated().map { index, peer in (peer: peer, payload: index == 0 ? bytes : forgedVote) }
            default:
                return peers.map { ($0, bytes) }
            }
        case .garbage, .replay:
            return peers.map { ($0, bytes) }
        }
    }

    /// Per slot it proposed (`equivocate`): the honest block's digest and the variant's.
    private var alternatives: [UInt64: (honest: SHA256Digest, variant: SHA256Digest)] = [:]

    /// A message received from a peer (kept for `replay`).
    mutating func received(_ payload: [UInt8]) { record(payload) }

    /// Extra frames at a tick: (peer, kind, payload).
    mutating func extra(to peers: [String]) -> [(peer: String, gossip: Bool, payload: [UInt8])] {
        if alternatives.count > 1_024 { alternatives.removeAll(keepingCapacity: true) }
        guard !peers.isEmpty, random.next() % 5 == 0 else { return [] }
        let peer = peers[Int(random.next() % UInt64(peers.count))]
        switch mode {
        case .garbage:
            var frames: [(String, Bool, [UInt8])] = [(peer, false, random.bytes(Int(random.next() % 512)))]
            if let old = pick() {
                var flipped = old
                let bit = Int(random.next() % UInt64(flipped.count * 8))
                flipped[bit / 8] ^= UInt8(1 << (bit % 8))
                frames.append((peer, false, flipped))
                frames.append((peer, false, Array(old.prefix(Int(random.next() % UInt64(old.count))))))
            }
            frames.append((peer, true, random.bytes(Int(random.next() % 400))))
            return frames
        case .replay:
            let frames = (0..<3).compactMap { _ in pick().map { (peer, false, $0) } }
            return frames
        case .equivocate, .withhold:
            return []
        }
    }

    private mutating func record(_ payload: [UInt8]) {
        guard mode == .replay || mode == .garbage else { return }
        if recorded.count < Self.recordedMax {
            recorded.append(payload)
        } else {
            recorded[recordedNext] = payload
            recordedNext = (recordedNext + 1) % Self.recordedMax
        }
    }

    private mutating func pick() -> [UInt8]? {
        guard !recorded.isEmpty else { return nil }
        let old = recorded[Int(random.next() % UInt64(recorded.count))]
        return old.isEmpty ? nil : old
    }
}
#endif
