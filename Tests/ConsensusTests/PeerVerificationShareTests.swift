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
    @Test func aPeersMessagesHoldAtMostItsShareOfTheVerifier() throws {
        let fixture = Fixture()
        let ids = fixture.signers.map(\.id)
        let genesis = try Fixtures.Fixture.validators(chainId: Fixture.chainId, nodeKeys: ids, signingKeys: ids).validated()
        var settings = NodeCoreSettings()
        settings.peerVerificationChecksMax = 10
        var core = try NodeCore(
            storage: SimulatedStorage(), genesis: genesis, replica: fixture.configuration, signer: fixture.signers[0], peers: ["p1", "p2", "p3"],
            settings: settings, verifySignature: { _ in true })
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
        // The outcomes give p1's share back (whatever they are).
        for pending in first { _ = core.drive(.verified(pending, .invalid)) }
        #expect(send(from: 1, count: 12).count == 10)
        #expect(core.counters.peerVerificationDropped == 22)
    }
}
