// A light client following validator-set changes: each handover is a checkpoint
// certified by the set in force, whose state names the next set and the block that
// decided it; the new set is trusted from the boundary the consensus uses, no earlier.
import Consensus
import CalissonCrypto
import Foundation
import Ledger
import LightClient
import Node
import Testing
import Wire

struct ValidatorHistoryTests {
    static let chainId = "calisson-history-test"
    let genesis = (0..<4).map { Ed25519PrivateKey(seed: SHA256.hash("old \($0)").bytes)! }
    let next = (0..<4).map { Ed25519PrivateKey(seed: SHA256.hash("new \($0)").bytes)! }

    /// A checkpoint certificate in the consensus wire form, signed by `signers`.
    static func certificate(height: UInt64, root: SHA256Digest, signers: [Ed25519PrivateKey]) -> [UInt8] {
        var body = WireWriter()
        body.write(height)
        body.write(root)
        let digest = SigningDomain(chainId: chainId, purpose: .checkpoint)!.digest(for: body.bytes)
        var writer = WireWriter()
        writer.write(UInt32(signers.count))
        for key in signers {
            writer.write(height)
            writer.write(root)
            writer.write(key.publicKey)
            writer.write(key.signature(for: digest.bytes))
        }
        return writer.bytes
    }

    /// A state holding a `ValidatorKeys` record (and something else), and the record's proof.
    static func state(_ record: ValidatorKeys) -> (root: SHA256Digest, value: [UInt8], proof: StateProof) {
        var store = MemoryStateStore()
        let values: [(key: StateKey, value: [UInt8]?)] = [(StateKeys.validatorKeys, record.wireBytes), (StateKeys.meta, [1, 2, 3])]
        let tree = StateTree.update(root: store.root, changes: values.map { ($0.key, $0.value.map(StateTree.valueHash)) }, nodes: store)
        store.commit(StateBatch(values: values, tree: tree))
        return (store.root, record.wireBytes, StateTree.proof(for: StateKeys.validatorKeys, root: store.root, nodes: store))
    }

    func handover(at height: UInt64, changedAt: UInt64, to keys: [Ed25519PrivateKey], signedBy signers: [Ed25519PrivateKey]) -> Handover {
        let (root, value, proof) = Self.state(ValidatorKeys(changedAt: changedAt, keys: keys.map(\.publicKey)))
        return Handover(height: height, certificate: Self.certificate(height: height, root: root, signers: signers), value: value, proof: proof)
    }

    @Test func theNewSetIsTrustedFromTheConsensusBoundaryOn() throws {
        var trusted = TrustedValidators(genesis: genesis.map(\.publicKey))
        // Decided by block 5: the checkpoint at 8, certified by the genesis set, hands over;
        // the new set orders the heights above 8 + 32.
        try trusted.follow(handover(at: 8, changedAt: 5, to: next, signedBy: Array(genesis[0..<3])), chainId: Self.chainId)
        #expect(trusted.keys(at: 40) == genesis.map(\.publicKey))
        #expect(trusted.keys(at: 41) == next.map(\.publicKey))
        #expect(trusted.changedAt == 5)
        // A checkpoint of the new epoch verifies with the followed set, not with the genesis one.
        let root = SHA256.hash("state at 48")
        let later = Self.certificate(height: 48, root: root, signers: Array(next[1..<4]))
        #expect(try CheckpointCheck.verify(later, height: 48, validators: trusted.keys(at: 48), chainId: Self.chainId) == root)
        #expect(throws: CertificateError.unknownSigner(next[1].publicKey)) {
            try CheckpointCheck.verify(later, height: 48, validators: genesis.map(\.publicKey), chainId: Self.chainId)
        }
        // ... and the retired set can no longer certify anything there.
        let retired = Self.certificate(height: 48, root: root, signers: Array(genesis[0..<3]))
        #expect(throws: CertificateError.self) {
            try CheckpointCheck.verify(retired, height: 48, validators: trusted.keys(at: 48), chainId: Self.chainId)
        }
    }

    @Test func forgedStaleAndLateHandoversAreRefused() throws {
        let start = TrustedValidators(genesis: genesis.map(\.publicKey))
        var trusted = start
        // Certified by the set it claims to install, not the one in force.
        #expect(throws: HandoverError.certificate(height: 8, .unknownSigner(next[0].publicKey))) {
            try trusted.follow(handover(at: 8, changedAt: 5, to: next, signedBy: Array(next[0..<3])), chainId: Self.chainId)
        }
        // Too few signers.
        #expect(throws: HandoverError.certificate(height: 8, .notAQuorum(signers: 2, quorum: 3))) {
            try trusted.follow(handover(at: 8, changedAt: 5, to: next, signedBy: Array(genesis[0..<2])), chainId: Self.chainId)
        }
        // A record that is not the certified one.
        var swapped = handover(at: 8, changedAt: 5, to: next, signedBy: Array(genesis[0..<3]))
        swapped = Handover(height: 8, certificate: swapped.certificate, value: ValidatorKeys(changedAt: 5, keys: [next[0].publicKey]).wireBytes,
                           proof: swapped.proof)
        #expect(throws: HandoverError.self) { try trusted.follow(swapped, chainId: Self.chainId) }
        // A checkpoint past the change's boundary cannot have been certified by the old set.
        #expect(throws: HandoverError.late(height: 48, changedAt: 5, boundary: 40)) {
            try trusted.follow(handover(at: 48, changedAt: 5, to: next, signedBy: Array(genesis[0..<3])), chainId: Self.chainId)
        }
        // A change at a height no chain reaches (2^64 − 1: its boundary trapped, killing a
        // syncing node or a gateway behind a lying node): refused by what it says.
        for changedAt in [UInt64.max, UInt64.max - 39, TrustedValidators.changedAtMax + 1] {
            let named = Handover(height: .max, certificate: [], value: ValidatorKeys(changedAt: changedAt, keys: [next[0].publicKey]).wireBytes,
                                 proof: swapped.proof)
            #expect(throws: HandoverError.malformed(height: .max, "a change at \(changedAt), past the highest height a chain can reach (\(TrustedValidators.changedAtMax))")) {
                try trusted.follow(named, chainId: Self.chainId)
            }
        }
        #expect(TrustedValidators.boundary(changedAt: .max) == .max)
        #expect(trusted == start, "nothing refused changed what is trusted")
        // The same change twice, or an older one after it.
        try trusted.follow(handover(at: 8, changedAt: 5, to: next, signedBy: Array(genesis[0..<3])), chainId: Self.chainId)
        #expect(throws: HandoverError.stale(height: 16, changedAt: 5, followed: 5)) {
            try trusted.follow(handover(at: 16, changedAt: 5, to: genesis, signedBy: Array(genesis[0..<3])), chainId: Self.chainId)
        }
        // Refused for what its value says before any signature is checked: a node repeating
        // old handovers with junk certificates costs no check.
        #expect(throws: HandoverError.stale(height: 16, changedAt: 5, followed: 5)) {
            try trusted.follow(handover(at: 16, changedAt: 5, to: genesis, signedBy: Array(next[0..<3])), chainId: Self.chainId)
        }
    }

    @Test func theLightClientUsesTheConsensusConstants() {
        let configuration = ReplicaConfiguration(chainId: Self.chainId, validators: ValidatorSet(genesis.map(\.publicKey))!)
        #expect(TrustedValidators.checkpointInterval == configuration.checkpointInterval)
        #expect(TrustedValidators.window == configuration.window)
        #expect(TrustedValidators.boundary(changedAt: 5) == configuration.genesisSchedule.boundary(executedAt: 5))
        #expect(TrustedValidators.boundary(changedAt: 16) == configuration.genesisSchedule.boundary(executedAt: 16))
    }
}
