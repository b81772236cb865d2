// Fuzz target: what arrives on a link after TLS, byte for byte. The input (after a first
// byte that sets how it is cut into reads, so frames straddle reads as they do on a
// socket) goes through the frame decoder; every frame's payload is decoded as the kind
// it names: hello, heartbeat (a validator's linked peers), consensus message, gossiped transaction, client request,
// client response. Each decode must be canonical or refused; an oversized length must be
// refused before anything is buffered.
import Consensus
import FuzzSupport
import Ledger
import LightClient
@testable import Transport
import Wire

enum Seeds {
    static func all() -> [[UInt8]] {
        let hello = Hello(versions: TransportLimits.protocolVersions, chainId: Metropole.chainId, partnerID: "rtm")
        let transactions = Metropole.transactionSeeds().prefix(4)
        var frames = FrameDecoder.frame(.hello, hello.wireBytes) + FrameDecoder.frame(.heartbeat, [])
        frames += FrameDecoder.frame(.heartbeat, LinkedPeers(peers: ["metropole", "rtm", "sud-energie"]).payload)
        for transaction in transactions { frames += FrameDecoder.frame(.gossip, transaction) }
        frames += FrameDecoder.frame(.consensus, Message.stateRequest(fromSeq: 4).wireBytes)
        frames += FrameDecoder.frame(.request, ClientRequest.status.wireBytes)
        frames += FrameDecoder.frame(.response, ClientResponse.refused("no").wireBytes)
        return [[0] + frames, [7] + frames, [255] + FrameDecoder.frame(.hello, hello.wireBytes)]
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    writeSeedsIfAsked(Seeds.all)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = fuzzInput(data, size)
    guard let first = input.first else { return 0 }
    let read = Int(first) + 1
    var decoder = FrameDecoder()
    var offset = 1
    while offset < input.count {
        let end = min(input.count, offset + read)
        decoder.append(Array(input[offset..<end]))
        offset = end
        do {
            while let envelope = try decoder.next() { decodePayload(envelope) }
        } catch {
            return 0  // the link is closed: nothing after this is read
        }
    }
    return 0
}

func decodePayload(_ envelope: Envelope<TransportKind>) {
    let payload = envelope.payload
    switch envelope.kind {
    case .hello: decodeCanonical(Hello.self, payload)
    case .heartbeat:
        // Empty, or what a validator says of its links: canonical, or refused.
        if !payload.isEmpty, let said = try? LinkedPeers(payload: payload) {
            precondition(said.payload == payload, "a heartbeat's linked peers decode from bytes that are not their encoding")
        }
    case .refusal: _ = String(decoding: payload.prefix(TransportLimits.refusalBytesMax), as: UTF8.self)  // what a node logs of it
    case .consensus: decodeCanonical(Message.self, payload)
    case .gossip: decodeCanonical(SignedTransaction.self, payload)
    case .request: decodeCanonical(ClientRequest.self, payload)
    case .response: decodeCanonical(ClientResponse.self, payload)
    }
}
