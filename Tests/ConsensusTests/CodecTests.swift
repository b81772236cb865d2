// The wire form of every consensus message: each kind round-trips with its nested
// certificates, what the shell verifies (the signed digests) is the same after
// decoding, and hostile bytes (truncations, flipped bytes, unknown kinds, huge counts)
// give a typed WireError, never a crash or a large allocation.
import CalissonTestKit
import CalissonCrypto
import Testing
import Wire
@testable import Consensus

@Suite(.onOwnThreads) struct CodecTests {
    let fixture = Fixture()

    /// One message of each kind, certificates filled in.
    var messages: [Message] {
        let proposal = fixture.prePrepare(by: 0, seq: 1, commands: [[1, 2, 3], [], Array(repeating: 7, count: 300)])
        let digest = proposal.body.block.digest
        let prepared = PreparedCertificate(prePrepare: proposal, prepares: [0, 1, 2].map { fixture.vote(.prepare, by: $0, seq: 1, digest: digest) })
        let checkpoint = CheckpointCertificate(votes: [1, 2, 3].map {
            Signed(CheckpointVote(seq: 4, stateRoot: SHA256.hash("root")), chainId: Fixture.chainId, signer: fixture.signers[$0])
        })
        let change = Signed(ViewChange(newView: 1, stable: checkpoint, prepared: [prepared]), chainId: Fixture.chainId, signer: fixture.signers[2])
        let bare = Signed(ViewChange(newView: 1, stable: nil, prepared: []), chainId: Fixture.chainId, signer: fixture.signers[3])
        let reproposal = Signed(PrePrepare(view: 1, block: proposal.body.block), chainId: Fixture.chainId, signer: fixture.signers[1])
        let newView = Signed(NewView(view: 1, viewChanges: [change, bare], prePrepares: [reproposal]), chainId: Fixture.chainId, signer: fixture.signers[1])
        let certified = CertifiedBlock(
            block: proposal.body.block,
            certificate: CommitCertificate(commits: [0, 1, 3].map { fixture.vote(.commit, by: $0, seq: 1, digest: digest) }))
        return [
            .prePrepare(proposal), .vote(fixture.vote(.commit, by: 3, view: 2, seq: 9, digest: digest)),
            .checkpoint(checkpoint.votes[0]), .viewChange(change), .newView(newView),
            .stateRequest(fromSeq: 42), .stateResponse([certified, certified]),
        ]
    }

    @Test func everyKindRoundTripsAndKeepsItsSignedDigests() throws {
        for message in messages {
            let decoded = try Message(wireBytes: message.wireBytes)
            #expect(decoded == message)
            #expect(decoded.signatureChecks(chainId: Fixture.chainId) == message.signatureChecks(chainId: Fixture.chainId))
        }
    }

    @Test func truncationsAndCorruptionsFailWithATypedError() {
        var random = SplitMix64(seed: 5)
        for message in messages {
            let bytes = message.wireBytes
            for length in 0..<bytes.count {
                #expect(throws: WireError.self) { try Message(wireBytes: Array(bytes.prefix(length))) }
            }
            #expect(throws: WireError.self) { try Message(wireBytes: bytes + [0]) }
            // Flipped bytes either still decode (a different, checkable message) or throw.
            for _ in 0..<200 {
                var corrupted = bytes
                corrupted[Int(random.next() % UInt64(bytes.count))] ^= UInt8(1 + random.next() % 255)
                _ = try? Message(wireBytes: corrupted)
            }
        }
    }

    /// What a replica persists decodes to the same records, so a restart folds the same log.
    @Test func safetyRecordsRoundTrip() throws {
        guard case let .prePrepare(proposal) = messages[0], case let .viewChange(change) = messages[3] else { return }
        let records: [SafetyRecord] = [
            .view(3, changing: true), .proposed(proposal), .voted(Vote(kind: .commit, view: 3, seq: 9, digest: SHA256.hash("d"))),
            .prepared(change.body.prepared[0]), .stable(change.body.stable!, opensEpoch: true),
        ]
        var original = SafetyLog(), restored = SafetyLog()
        for record in records {
            let decoded = try SafetyRecord(wireBytes: record.wireBytes)
            #expect(decoded == record)
            original.apply(record)
            restored.apply(decoded)
        }
        #expect(original == restored)
        #expect(throws: WireError.self) { try SafetyRecord(wireBytes: [9]) }
    }

    @Test func unknownKindsAndHugeCountsAreRefused() {
        #expect(throws: WireError.unknownKind(field: "message.kind", offset: 0, raw: 99)) { try Message(wireBytes: [99]) }
        var vote = WireWriter()
        vote.write(Message.Tag.vote.rawValue)
        vote.write(UInt8(3))  // neither prepare nor commit
        #expect(throws: WireError.unknownKind(field: "vote.kind", offset: 1, raw: 3)) { try Message(wireBytes: vote.bytes) }
        // A state response claiming four billion blocks is refused before any allocation.
        var huge = WireWriter()
        huge.write(Message.Tag.stateResponse.rawValue)
        huge.write(UInt32.max)
        #expect(throws: WireError.self) { try Message(wireBytes: huge.bytes) }
    }
}
