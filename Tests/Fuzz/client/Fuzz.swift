// Fuzz target: the client API, both ways. An input is decoded as a request (what a node
// reads from a client) and as a response (what the query CLI reads from a node it does
// not trust); each must decode canonically or be refused. A response that decodes goes
// through the light client's checks, as `calisson` runs them: checkpoint certificates
// against the validators, state proofs against the certified root, inclusion proofs and
// commit certificates, validator-set handovers. A forged answer must be refused, never
// crash the client.
import CalissonCrypto
import FuzzSupport
import Ledger
import LightClient
import Wire

enum Seeds {
    static func all() -> [[UInt8]] {
        let ledger = Metropole.ledger
        let root = ledger.store.root
        let key = StateKeys.partner(Metropole.id("rtm"))
        let (value, proof) = ledger.proof(key)
        let certificate = Metropole.checkpointCertificate(height: 0, root: root)
        let handover = Handover(height: 0, certificate: certificate, value: value ?? [], proof: proof)
        let requests: [ClientRequest] = [
            .status, .submit([1, 2, 3]), .state(key), .certifiedState(key), .blocks(from: 1, limit: 10, waitMilliseconds: 100),
            .transactionProof(Bytes32([UInt8](repeating: 7, count: 32))!), .handovers(after: 0), .blockTransactions(3),
            .blockContents(3), .treePages([root, .zero]), .stateValues([StateValueReference(key: key, valueHash: root)]),
            .transactionResult(Bytes32([UInt8](repeating: 7, count: 32))!),
        ]
        let single = MerkleProof(leafIndex: 0, leafCount: 1, siblings: [])
        let inclusion = TransactionInclusion(
            location: TransactionLocation(height: 3, position: 0, applied: false, reason: "evidenceUsed"), commandCount: 1, proof: single, certificate: certificate)
        let responses: [ClientResponse] = [
            .certifiedState(height: 0, certificate: certificate, value: value, proof: proof),
            .state(height: 0, root: root, value: value, proof: proof),
            .handovers([handover]),
            .refused("mempool full"),
            .blockTransactions([Bytes32([UInt8](repeating: 1, count: 32))!]),
            .blockContents(BlockContents(
                height: 3, body: [0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 7, 7], certificate: certificate, results: [[0]], closedEpoch: 1,
                decided: [[1, 2, 3]], opened: [OpenedProposal(position: 0, proposal: 9)])),
            .blockContents(BlockContents(
                height: 3, body: [0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 7, 7], certificate: certificate, results: [[0]], closedEpoch: nil,
                decided: [], opened: [], decidedLeftOut: [4, 5])),
            .treePages([[1, 2], nil, []]), .stateValues([nil, value]),
            .transactionResult(ResultProof(
                inclusion: inclusion, committed: CommittedResults.bytes(.rejected(.evidenceUsed)), resultProof: single, checkpointHeight: 0,
                checkpointCertificate: certificate, record: CommittedResults.record([.rejected(.evidenceUsed)]).wireBytes, recordProof: proof)),
            .transactionResult(ResultProof(
                inclusion: inclusion, committed: nil, resultProof: nil, checkpointHeight: 0, checkpointCertificate: certificate, record: nil, recordProof: proof)),
        ]
        return requests.map(\.wireBytes) + responses.map(\.wireBytes)
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    writeSeedsIfAsked(Seeds.all)
    _ = Metropole.ledger
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = fuzzInput(data, size)
    decodeCanonical(ClientRequest.self, input)
    if let result = CommittedResults.result(input) { precondition(CommittedResults.result(CommittedResults.bytes(result)) == result) }
    guard let response = decodeCanonical(ClientResponse.self, input) else { return 0 }
    let validators = Metropole.nodeKeys, chainId = Metropole.chainId
    switch response {
    case let .certifiedState(height, certificate, value, proof):
        guard let root = try? CheckpointCheck.verify(certificate, height: height, validators: validators, chainId: chainId) else { break }
        let key = StateKeys.partner(Metropole.id("rtm"))
        if let value { _ = try? proof.verifyInclusion(key: key, value: value, root: root) } else { _ = try? proof.verifyAbsence(key: key, root: root) }
    case let .state(_, root, value, proof):
        let key = StateKeys.validatorKeys
        if let value { _ = try? proof.verifyInclusion(key: key, value: value, root: root) } else { _ = try? proof.verifyAbsence(key: key, root: root) }
    case let .transactionProof(inclusion?):
        _ = try? InclusionCheck.verify(
            transaction: Bytes32([UInt8](repeating: 7, count: 32))!, height: inclusion.location.height, commandCount: inclusion.commandCount, proof: inclusion.proof,
            certificate: inclusion.certificate, validators: validators, chainId: chainId)
    case let .transactionResult(found?):
        _ = try? ResultCheck.verify(
            found, transaction: Bytes32([UInt8](repeating: 7, count: 32))!, trusted: TrustedValidators(genesis: validators), chainId: chainId)
    case let .handovers(handovers):
        var trusted = TrustedValidators(genesis: validators)
        for handover in handovers { _ = try? trusted.follow(handover, chainId: chainId) }
    default:
        break
    }
    return 0
}
