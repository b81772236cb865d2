// A node core hands a peer's consensus messages to the verifier up to the peer's share
// (signatures and bytes waiting at once): past it they are dropped unchecked, whatever
// the others send; outcomes give the share back.
import CalissonCrypto
import Consensus
import Fixtures
import Ledger
import NodeCore
import Simulation
import Testing

@Suite struct PeerVerificationShareTests {
    /// Validator 0's core among four, with `settings`, signatures taken as valid when executed.
    static func core(_ fixture: Fixture, _ settings: NodeCoreSettings) throws -> NodeCore<SimulatedStorage, TestSigner> {
        let ids = fixture.signers.map(\.id)
        let genesis = try Fixtures.Fixture.validators(chainId: Fixture.chainId, nodeKeys: ids, signingKeys: ids).validated()
        return try NodeCore(
            storage: SimulatedStorage(), genesis: genesis, replica: fixture.configuration, signer: fixture.signers[0], peers: ["p1", "p2", "p3"],
            settings: settings, verifySignature: { _ in true })
    }

    @Test func aPeersMessagesHoldAtMostItsShareOfTheVerifier() throws {
        let fixture = Fixture()
        var settings = NodeCoreSettings()
        settings.peerVerificationChecksMax = 10
        var core = try Self.core(fixture, settings)
        /// Prepare votes from validator `index`, one signature each, handed to the core;
        /// what it gave the verifier.
        func send(from index: Int, count: Int) -> [PendingCheck] {
            (0..<count).flatMap { number -> [PendingCheck] in
                let vote = fixture.vote(.prepare, by: index, seq: UInt64(number + 1), digest: SHA256.hash("block \(index) \(number)"))
                return core.drive(.peerMessage(Message.vote(vote).wireBytes, from: "p\(index)")).compactMap {
                    if case let .verify(_, pending) = $0 { pending } else { nil }
                }
            }
        }
        let first = send(from: 1, count: 30)
        #expect(first.count == 10)
        #expect(core.counters.peerVerificationDropped == 20)
        // Another peer has a share of its own.
        #expect(send(from: 2, count: 5).count == 5)
        // The outcomes give p1's share back (a bad signature would also distrust p1: below).
        for pending in first { _ = core.drive(.verified(pending, .valid)) }
        #expect(send(from: 1, count: 12).count == 10)
        #expect(core.counters.peerVerificationDropped == 22)
    }

    /// A peer's messages waiting for the verifier are bounded in number too: one-signature
    /// messages under the checks' share filled the verifier's whole queue.
    @Test func aPeersMessagesAreBoundedInNumberToo() throws {
        let fixture = Fixture()
        var settings = NodeCoreSettings()
        settings.peerVerificationMessagesMax = 6
        var core = try Self.core(fixture, settings)
        func send(from index: Int, count: Int, first: Int = 1) -> [PendingCheck] {
            (0..<count).flatMap { number -> [PendingCheck] in
                let vote = fixture.vote(.prepare, by: index, seq: UInt64(first + number), digest: SHA256.hash("block \(index) \(number)"))
                return core.drive(.peerMessage(Message.vote(vote).wireBytes, from: "p\(index)")).compactMap {
                    if case let .verify(_, pending) = $0 { pending } else { nil }
                }
            }
        }
        let held = send(from: 1, count: 10)
        #expect(held.count == 6 && core.counters.peerVerificationDropped == 4)
        #expect(send(from: 2, count: 3).count == 3)
        _ = core.drive(.verified(held[0], .valid))
        #expect(send(from: 1, count: 2, first: 20).count == 1)
    }

    /// A bad signature makes its peer distrusted: its messages are dropped unchecked for
    /// 2^level ticks, then it holds its share halved per level, with no message past it;
    /// a level is forgiven every `distrustForgivenTicks`. Other peers keep their shares.
    @Test func aPeerSendingBadSignaturesIsDistrustedThenForgiven() throws {
        let fixture = Fixture()
        var settings = NodeCoreSettings()
        settings.peerVerificationChecksMax = 16
        settings.distrustForgivenTicks = 100
        var core = try Self.core(fixture, settings)
        var number = 0
        func send(from index: Int, count: Int) -> [PendingCheck] {
            (0..<count).flatMap { _ -> [PendingCheck] in
                number += 1
                let vote = fixture.vote(.prepare, by: index, seq: UInt64(number), digest: SHA256.hash("block \(index) \(number)"))
                return core.drive(.peerMessage(Message.vote(vote).wireBytes, from: "p\(index)")).compactMap {
                    if case let .verify(_, pending) = $0 { pending } else { nil }
                }
            }
        }
        func ticks(_ count: Int) { for _ in 0..<count { _ = core.drive(.tick) } }
        let first = send(from: 1, count: 1)
        #expect(first.count == 1)
        _ = core.drive(.verified(first[0], .invalid))
        #expect(core.distrust(of: "p1") == 1)
        // Level 1: dropped unchecked for 2 ticks; p2 is not concerned.
        #expect(send(from: 1, count: 3).isEmpty && core.counters.distrustedDropped == 3)
        #expect(send(from: 2, count: 3).count == 3)
        ticks(2)
        // Then half its share (8 of 16).
        let half = send(from: 1, count: 20)
        #expect(half.count == 8)
        // Three more bad ones: level 4, dropped for 16 ticks, then a sixteenth (1 check).
        for pending in half.prefix(3) { _ = core.drive(.verified(pending, .invalid)) }
        for pending in half.dropFirst(3) { _ = core.drive(.verified(pending, .valid)) }
        #expect(core.distrust(of: "p1") == 4)
        ticks(15)
        #expect(send(from: 1, count: 1).isEmpty)
        ticks(1)
        #expect(send(from: 1, count: 4).count == 1)
        #expect(core.counters.badSignatures == 4)
        // Forgiven a level every 100 ticks without a bad signature: whole again after 400.
        ticks(400)
        #expect(core.distrust(of: "p1") == 0)
        #expect(send(from: 1, count: 20).count >= 15)
    }
}
