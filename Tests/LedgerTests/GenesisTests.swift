// The genesis file: the documented JSON decodes into the initial state (every partner,
// programme and parameter readable from the ledger, with proofs), and each kind of
// mistake is refused with an error naming the field.
import CalissonTestKit
import Foundation
import CalissonCrypto
import Testing
import Wire
@testable import Ledger

@Suite(.onOwnThreads) struct GenesisTests {
    @Test func documentedJSONBuildsTheInitialState() throws {
        let key = LedgerFixture.key("sign metropole").publicKey.bytes.hex
        let json = """
            {
              "chainId": "calisson-amp-1",
              "parameters": { "epochLength": 1000, "approval": "2/3", "sink": "metropole" },
              "partners": [
                { "id": "metropole", "name": "Métropole Aix-Marseille-Provence",
                  "roles": ["authority", "issuer", "acceptor", "validator"],
                  "signingKey": "\(key)", "nodeKey": "\(key)" }
              ],
              "validators": ["metropole"],
              "programmes": [
                { "id": "recyclage", "name": "Tri sélectif", "category": "wasteSorting", "rewardPerUnit": 10,
                  "issuers": ["metropole"], "sponsor": "metropole", "capPerAccount": 2000, "capPeriod": "month",
                  "walletCeiling": 5000, "budget": 1000000, "expiryEpochs": 12 }
              ]
            }
            """
        let file = try JSONDecoder().decode(GenesisFile.self, from: Data(json.utf8))
        let genesis = try file.validated()
        let ledger = try Ledger.create(genesis, in: MemoryStateStore())
        #expect(ledger.partner(id("metropole"))?.roles == [.authority, .issuer, .acceptor, .validator])
        #expect(ledger.programme(id("recyclage"))?.lifetime == .expiry(epochs: 12))
        #expect(ledger.parameters.epochLength == 1_000 && ledger.parameters.transactionLifetimeMax == 600)
        #expect(ledger.nodeKeys() == [LedgerFixture.key("sign metropole").publicKey])
        let (value, proof) = ledger.proof(StateKeys.programme(id("recyclage")))
        try proof.verifyInclusion(key: StateKeys.programme(id("recyclage")), value: try #require(value), root: ledger.stateRoot)
    }

    @Test func mistakesNameTheirField() {
        func problem(_ change: (inout GenesisFile) -> Void) -> String? {
            var file = LedgerFixture.genesisFile()
            change(&file)
            do {
                _ = try file.validated()
                return nil
            } catch {
                return error.field
            }
        }
        #expect(problem { _ in } == nil)
        #expect(problem { $0.chainId = "" } == "chainId")
        #expect(problem { $0.partners[2].signingKey = "zz" } == "partners[2].signingKey")
        #expect(problem { $0.partners[1].id = "RTM" } == "partners[1].id")
        #expect(problem { $0.partners[1].roles = ["driver"] } == "partners[1].roles")
        #expect(problem { $0.partners[0].roles = ["issuer"] } == "partners")  // no authority left
        #expect(problem { $0.validators = ["fonds"] } == "validators[0]")
        #expect(problem { $0.parameters.approval = "two thirds" } == "parameters.approval")
        #expect(problem { $0.parameters.epochLength = 0 } == "parameters")
        #expect(problem { $0.parameters.tokenValueMicroEuros = Parameters.tokenValueMicroEurosMax } == nil)
        #expect(problem { $0.parameters.tokenValueMicroEuros = Parameters.tokenValueMicroEurosMax + 1 } == "parameters")
        #expect(problem { $0.parameters.tokenValueMicroEuros = .max } == "parameters")
        #expect(problem { $0.parameters.sink = "nobody" } == "parameters.sink")
        #expect(problem { $0.programmes[0].sponsor = "nobody" } == "programmes[0].sponsor")
        #expect(problem { $0.programmes[0].issuers = ["fonds"] } == "programmes[0].issuers[0]")
        #expect(problem { $0.programmes[1].expiryEpochs = 3 } == "programmes[1]")  // both lifetimes
        #expect(problem { $0.programmes[0].budget = 1 << 60 } == "programmes[0].budget")
        #expect(problem { $0.programmes[2].capPeriod = "year" } == "programmes[2].capPeriod")
    }
}
