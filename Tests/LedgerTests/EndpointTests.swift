// Peers found in the ledger (ledger rules 4): a partner's endpoints, set at its admission,
// by the partner itself or by governance, checked for form, refused as an unknown kind
// before rules 4, and written by a genesis that starts at rules 4 (whose digest then
// differs, while an older genesis keeps the digest it had).
import CalissonCrypto
import Fixtures
import Testing
import Wire
@testable import Ledger

@Suite(.onOwnThreads) struct EndpointTests {
    static func endpoint(_ text: String) -> PeerEndpoint { PeerEndpoint(text)! }

    @Test func aPartnerSetsItsOwnEndpointsAndGovernanceSetsAnyones() {
        var f = LedgerFixture(epochLength: 1_000)
        let mine = [Self.endpoint("10.0.0.7:7100"), Self.endpoint("node.rtm.example:7100")]
        // Before rules 4 the kind is unknown, as it was to the code before it.
        guard case let .malformed(reason) = f.one(f.partnerTx("rtm", .setEndpoints(mine))).rejection, reason.contains("body.kind") else {
            Issue.record("endpoints before rules 4 were not refused as an unknown kind")
            return
        }
        f = LedgerFixture.withRules(LedgerRules.endpoints, upgrade: "endpoints")
        let outcome = f.ledger.execute([f.partnerTx("rtm", .setEndpoints(mine))])
        #expect(outcome.results == [.applied])
        #expect(outcome.partnersChanged, "the node's dialling follows a change of endpoints")
        #expect(f.ledger.endpoints(id("rtm")) == mine)
        // A citizen has no node to list.
        #expect(f.one(f.citizenTx(1, .setEndpoints(mine))).rejection == .malformed("this transaction must be signed by a partner"))
        // Governance sets another partner's, and clears them.
        f.govern(.setPartnerEndpoints(id("friche"), [Self.endpoint("friche.example:7000")]))
        #expect(f.ledger.endpoints(id("friche")) == [Self.endpoint("friche.example:7000")])
        f.govern(.setPartnerEndpoints(id("rtm"), []))
        #expect(f.ledger.endpoints(id("rtm")).isEmpty)
        // A partner that does not exist has none to set.
        let unknown = f.partnerTx("metropole", .propose(.setPartnerEndpoints(id("nobody"), [Self.endpoint("a.example:1")]), deadline: f.ledger.height + 100))
        #expect(f.one(unknown).rejection == .invalidAction("unknown partner nobody"))
    }

    @Test func anAdmissionCarriesTheNewcomersEndpoints() throws {
        var f = LedgerFixture.withRules(LedgerRules.endpoints, upgrade: "endpoints")
        let newcomer = Partner(id: id("velo"), name: "Vélo", roles: [.issuer, .validator], signingKey: LedgerFixture.key("sign velo").publicKey)
        let endpoints = [Self.endpoint("velo.example:7100")]
        let action = GovernanceAction.admitPartner(newcomer, endpoints: endpoints)
        #expect(action.rulesIntroduced == LedgerRules.endpoints && GovernanceAction.admitPartner(newcomer).rulesIntroduced == LedgerRules.initial)
        let outcome = f.governOutcome(action)
        #expect(outcome?.partnersChanged == true)
        #expect(f.ledger.partner(id("velo")) == newcomer && f.ledger.endpoints(id("velo")) == endpoints)
        // Without endpoints an admission keeps the encoding of rules 1 (kind 1), byte for byte.
        #expect(GovernanceAction.admitPartner(newcomer).wireBytes.first == 1 && action.wireBytes.first == 13)
        #expect(try GovernanceAction(wireBytes: action.wireBytes) == action)
        #expect(throws: WireError.self) { try GovernanceAction(wireBytes: action.wireBytes, formatVersion: LedgerRules.evidence) }
    }

    @Test func endpointsAreCheckedForForm() throws {
        for good in ["127.0.0.1:7100", "node-1.rtm.example:65535", "a:1", String(repeating: "a.", count: 126) + "a:80"] {
            #expect(PeerEndpoint(good) != nil, "\(good)")
        }
        let bad = [
            "", ":", "host", "host:", "host:0", "host:65536", "host:-1", "Host.example:7100", "-a.example:1", "a-.example:1", "a..b:1", ".a:1",
            "a.:1", "[::1]:7100", "::1:7100", "a b:1", "é.example:1", String(repeating: "a", count: 64) + ":1",
            String(repeating: "a.", count: 127) + "a:80", "host:18446744073709551615",
        ]
        for text in bad { #expect(PeerEndpoint(text) == nil, "\(text)") }
        // A list is at most four, sorted and distinct: the ledger refuses anything else.
        var f = LedgerFixture.withRules(LedgerRules.endpoints, upgrade: "endpoints")
        let five = (1...5).map { Self.endpoint("10.0.0.\($0):7100") }
        #expect(f.one(f.partnerTx("rtm", .setEndpoints(five))).rejection != nil)
        let unsorted = [Self.endpoint("b.example:1"), Self.endpoint("a.example:1")]
        #expect(f.one(f.partnerTx("rtm", .setEndpoints(unsorted))).rejection != nil)
        #expect(f.ledger.endpoints(id("rtm")).isEmpty)
        // Bytes that carry a bad host, or an unsorted list, do not decode.
        struct Raw: WireEncodable {
            let host: String
            func encode(to writer: inout WireWriter) {
                writer.writeString(host)
                writer.write(UInt16(7100))
            }
        }
        for hosts in [["UPPER.example"], ["b.example", "a.example"]] {
            var writer = WireWriter()
            writer.write(UInt8(7))
            writer.writeArray(hosts.map(Raw.init))
            #expect(throws: WireError.self) { try TransactionBody(wireBytes: writer.bytes, formatVersion: LedgerRules.endpoints) }
        }
    }

    @Test func aGenesisStartsAtRules4WithEndpointsAndAnOlderOneKeepsItsDigest() throws {
        var file = LedgerFixture.genesisFile()
        let older = try file.validated()
        file.rules = LedgerRules.endpoints
        file.partners[0].endpoints = ["127.0.0.1:7100", "127.0.0.1:7100", "node.example:7100"]
        let genesis = try file.validated()
        #expect(genesis.endpoints[Identifier(file.partners[0].id)!] == [Self.endpoint("127.0.0.1:7100"), Self.endpoint("node.example:7100")])
        #expect(genesis.digest != older.digest)
        file.rules = nil
        file.partners[0].endpoints = nil
        #expect(try file.validated().digest == older.digest, "a genesis without the new fields keeps its digest")

        let ledger = try Ledger.create(genesis, in: MemoryStateStore())
        #expect(ledger.rules(atHeight: 1) == LedgerRules.endpoints && ledger.upgrades.upgrades == [Genesis.upgrade(LedgerRules.endpoints)])
        #expect(ledger.endpoints(Identifier(file.partners[0].id)!) == genesis.endpoints[Identifier(file.partners[0].id)!])

        // Endpoints need the rules that know them; rules this release lacks are refused.
        file.partners[0].endpoints = ["127.0.0.1:7100"]
        #expect(throws: GenesisError(field: "partners[0].endpoints", reason: "needs ledger rules 4 (\"rules\": 4)")) { try file.validated() }
        file.rules = LedgerRules.newest + 1
        #expect(throws: GenesisError.self) { try file.validated() }
        file.rules = 0
        #expect(throws: GenesisError.self) { try file.validated() }
        file.rules = LedgerRules.endpoints
        file.partners[0].endpoints = ["127.0.0.1:0"]
        #expect(throws: GenesisError(field: "partners[0].endpoints[0]", reason: "'127.0.0.1:0': port 0")) { try file.validated() }
    }
}

/// Withdrawing a voted upgrade before its height (ledger rules 4): a binary that lacks its
/// rules then never has to stop; one in force, or unknown, cannot be cancelled.
@Suite(.onOwnThreads) struct CancelUpgradeTests {
    @Test func aVotedUpgradeIsWithdrawnBeforeItsHeightOnly() {
        var f = LedgerFixture.withRules(LedgerRules.endpoints, upgrade: "endpoints")
        let future = ScheduledUpgrade(name: id("future"), height: f.ledger.height + 50, rules: LedgerRules.newest + 1)
        f.govern(.scheduleUpgrade(future))
        #expect(f.ledger.upgrades.pending(after: f.ledger.height) == [future])
        while f.ledger.height + 10 < future.height { f.run([]) }
        #expect(f.ledger.upgrades.missing(atHeight: future.height, newest: LedgerRules.newest) == future, "this binary would stop at the height")
        // Proposed, then passed by the votes (a block each), all below the height.
        f.govern(.cancelUpgrade(id("future")))
        #expect(f.ledger.height < future.height && f.ledger.upgrades.pending(after: f.ledger.height).isEmpty)
        while f.ledger.height < future.height + 1 { f.run([]) }
        #expect(f.ledger.upgradeMissing(newest: LedgerRules.newest) == nil && f.ledger.rules(atHeight: f.ledger.height) == LedgerRules.endpoints)
        // The upgrade in force cannot be cancelled, nor one never voted.
        func proposing(_ action: GovernanceAction) -> LedgerRejection? {
            f.one(f.partnerTx("metropole", .propose(action, deadline: f.ledger.height + 100))).rejection
        }
        #expect(proposing(.cancelUpgrade(id("endpoints"))) == .invalidAction("upgrade endpoints took effect at height \(f.ledger.upgrades.upgrades[0].height): it cannot be cancelled"))
        #expect(proposing(.cancelUpgrade(id("never"))) == .invalidAction("no upgrade named never"))
        // Unknown below rules 4, as every action of rules 4.
        #expect(GovernanceAction.cancelUpgrade(id("x")).rulesIntroduced == LedgerRules.endpoints)
        #expect(throws: WireError.self) { try GovernanceAction(wireBytes: GovernanceAction.cancelUpgrade(id("x")).wireBytes, formatVersion: LedgerRules.evidence) }
    }
}
