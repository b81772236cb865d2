// Fuzz target: consensus messages, from the bytes a peer sends to the replica's rules.
// An input is one or more messages (`Pieces`, each prefixed by a byte naming the
// validator it comes from). Each must decode canonically or be refused; the ones that
// decode go through `signatureChecks` and then, taken as correctly signed (a Byzantine
// validator signs whatever it likes), into a fresh replica of a four-validator network,
// which answers requests for payloads and executions as a node would. A crash, a trap or
// a broken precondition anywhere on that path is a bug.
import Consensus
import CalissonCrypto
import FuzzSupport
import Wire

struct FuzzSigner: ConsensusSigner {
    let id: ValidatorID
    let key: Ed25519PrivateKey
    func sign(_ digest: SHA256Digest) -> Ed25519Signature { key.signature(for: digest.bytes) }
}

enum Network {
    static let chainId = "calisson-fuzz"
    static let signers: [FuzzSigner] = (0..<4).map { index in
        let key = Ed25519PrivateKey(seed: SHA256.hash("validator \(index)").bytes)!
        return FuzzSigner(id: key.publicKey, key: key)
    }
    static let configuration: ReplicaConfiguration = {
        var configuration = ReplicaConfiguration(chainId: chainId, validators: ValidatorSet(signers.map(\.id))!)
        configuration.checkpointInterval = 4
        configuration.window = 8
        return configuration
    }()
    static let replica = Replica(configuration: configuration, signer: signers[1])

    /// Messages of every kind, correctly signed, for the seed corpus.
    static func seeds() -> [[UInt8]] {
        let block = Block(seq: 1, commands: [[1, 2, 3], [4]])
        let prePrepare = Message.prePrepare(Signed(PrePrepare(view: 0, block: block), chainId: chainId, signer: signers[0]))
        func vote(_ kind: VoteKind, _ index: Int) -> Message {
            .vote(Signed(Vote(kind: kind, view: 0, seq: 1, digest: block.digest), chainId: chainId, signer: signers[index]))
        }
        func from(_ index: UInt8, _ message: Message) -> [UInt8] { [index] + message.wireBytes }
        let votes = (0..<4).map { vote(.prepare, $0) } + (0..<4).map { vote(.commit, $0) }
        return [
            prePrepare.wireBytes,
            Pieces.join([from(0, prePrepare)] + votes.enumerated().map { from(UInt8($0.offset % 4), $0.element) }),
            Pieces.join([from(2, .stateRequest(fromSeq: 1))]),
            Pieces.join([from(3, .stateResponse([]))]),
        ]
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    writeSeedsIfAsked(Network.seeds)
    _ = Network.replica
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = fuzzInput(data, size)
    if let message = decodeCanonical(Message.self, input) { _ = message.signatureChecks(chainId: Network.chainId) }
    var replica = Network.replica
    var inputs: [Input] = []
    for piece in Pieces(input).prefix(32) {
        guard let sender = piece.first, let message = decodeCanonical(Message.self, Array(piece.dropFirst())) else { continue }
        _ = message.signatureChecks(chainId: Network.chainId)
        inputs.append(.message(message, from: Network.signers[Int(sender) % Network.signers.count].id))
        inputs.append(.tick(pendingCommands: Int(sender)))
    }
    var steps = 0
    while !inputs.isEmpty, steps < 256 {
        steps += 1
        for action in replica.step(inputs.removeFirst()) {
            switch action {
            case let .requestPayload(seq, _): inputs.append(.payload(seq: seq, commands: [[UInt8(truncatingIfNeeded: seq)]]))
            case let .execute(certified): inputs.append(.executed(seq: certified.block.seq, stateRoot: SHA256.hash(certified.block.digest.bytes)))
            default: break
            }
        }
    }
    return 0
}
