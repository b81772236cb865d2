import CalissonCrypto
import Wire

// The wire form of consensus messages, for Transport. It differs from what is signed:
// a PrePrepare travels with its whole block but its signature covers the block's digest,
// and certificates travel whole inside ViewChange and NewView. Decoding rebuilds the
// values, so the shell recomputes every signed digest (`Message.signatureChecks`) from
// what it received. Every count is bounded before anything is allocated.

/// A signed body's wire form (the body, not what is signed).
public protocol MessageBody: SignedBody {
    func encodeMessage(to writer: inout WireWriter)
    init(message reader: inout WireReader) throws(WireError)
}

/// Bounds on what a peer may send, beyond `WireLimits.envelopePayloadSizeMax`.
public enum MessageLimits {
    /// Prepared certificates in a view change, PrePrepares in a NewView, blocks in a state
    /// response: at most one per height of a window.
    public static let heightsMax = 4_096
}

extension Signed: WireCodable where Body: MessageBody {
    public func encode(to writer: inout WireWriter) {
        body.encodeMessage(to: &writer)
        writer.write(signer)
        writer.write(signature)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let body = try Body(message: &reader)
        let signer = try Ed25519PublicKey(from: &reader)
        let signature = try Ed25519Signature(from: &reader)
        self.init(body: body, signer: signer, signature: signature)
    }

    public static var wireSizeMin: Int { 32 + 64 }
}

extension PrePrepare: MessageBody {
    public func encodeMessage(to writer: inout WireWriter) {
        writer.write(view)
        writer.write(block)
    }

    public init(message reader: inout WireReader) throws(WireError) {
        let view = try reader.readUInt64("prePrepare.view")
        self.init(view: view, block: try Block(from: &reader))
    }
}

extension Vote: MessageBody {
    public func encodeMessage(to writer: inout WireWriter) { encode(to: &writer) }

    public init(message reader: inout WireReader) throws(WireError) {
        let raw = try reader.readUInt8("vote.kind")
        guard let kind = VoteKind(rawValue: raw) else {
            throw .unknownKind(field: "vote.kind", offset: reader.offset - 1, raw: UInt64(raw))
        }
        let view = try reader.readUInt64("vote.view")
        let seq = try reader.readUInt64("vote.seq")
        self.init(kind: kind, view: view, seq: seq, digest: try SHA256Digest(from: &reader))
    }
}

extension CheckpointVote: MessageBody {
    public func encodeMessage(to writer: inout WireWriter) { encode(to: &writer) }

    public init(message reader: inout WireReader) throws(WireError) {
        let seq = try reader.readUInt64("checkpoint.seq")
        self.init(seq: seq, stateRoot: try SHA256Digest(from: &reader))
    }
}

extension PreparedCertificate: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(prePrepare)
        writer.writeArray(prepares)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let prePrepare = try Signed<PrePrepare>(from: &reader)
        let prepares = try reader.readArray("prepared.prepares", maximum: ValidatorSet.countMax, of: Signed<Vote>.self)
        self.init(prePrepare: prePrepare, prepares: prepares)
    }
}

extension CommitCertificate: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.writeArray(commits) }

    public init(from reader: inout WireReader) throws(WireError) {
        self.init(commits: try reader.readArray("commit.votes", maximum: ValidatorSet.countMax, of: Signed<Vote>.self))
    }
}

extension CertifiedBlock: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(block)
        writer.write(certificate)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let block = try Block(from: &reader)
        self.init(block: block, certificate: try CommitCertificate(from: &reader))
    }
}

extension CheckpointCertificate: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.writeArray(votes) }

    public init(from reader: inout WireReader) throws(WireError) {
        self.init(votes: try reader.readArray("checkpoint.votes", maximum: ValidatorSet.countMax, of: Signed<CheckpointVote>.self))
    }
}

extension ViewChange: MessageBody {
    public func encodeMessage(to writer: inout WireWriter) {
        writer.write(newView)
        writer.writeOptional(stable)
        writer.writeArray(prepared)
    }

    public init(message reader: inout WireReader) throws(WireError) {
        let newView = try reader.readUInt64("viewChange.newView")
        let stable = try reader.readOptional("viewChange.stable", of: CheckpointCertificate.self)
        let prepared = try reader.readArray("viewChange.prepared", maximum: MessageLimits.heightsMax, of: PreparedCertificate.self)
        self.init(newView: newView, stable: stable, prepared: prepared)
    }
}

extension NewView: MessageBody {
    public func encodeMessage(to writer: inout WireWriter) {
        writer.write(view)
        writer.writeArray(viewChanges)
        writer.writeArray(prePrepares)
    }

    public init(message reader: inout WireReader) throws(WireError) {
        let view = try reader.readUInt64("newView.view")
        let changes = try reader.readArray("newView.viewChanges", maximum: ValidatorSet.countMax, of: Signed<ViewChange>.self)
        let prePrepares = try reader.readArray("newView.prePrepares", maximum: MessageLimits.heightsMax, of: Signed<PrePrepare>.self)
        self.init(view: view, viewChanges: changes, prePrepares: prePrepares)
    }
}

/// One byte names the message; the rest is its wire form.
extension Message: WireCodable {
    enum Tag: UInt8 {
        case prePrepare = 1, vote, checkpoint, viewChange, newView, stateRequest, stateResponse
    }

    public func encode(to writer: inout WireWriter) {
        switch self {
        case let .prePrepare(m): writer.write(Tag.prePrepare.rawValue); writer.write(m)
        case let .vote(m): writer.write(Tag.vote.rawValue); writer.write(m)
        case let .checkpoint(m): writer.write(Tag.checkpoint.rawValue); writer.write(m)
        case let .viewChange(m): writer.write(Tag.viewChange.rawValue); writer.write(m)
        case let .newView(m): writer.write(Tag.newView.rawValue); writer.write(m)
        case let .stateRequest(fromSeq): writer.write(Tag.stateRequest.rawValue); writer.write(fromSeq)
        case let .stateResponse(blocks): writer.write(Tag.stateResponse.rawValue); writer.writeArray(blocks)
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let raw = try reader.readUInt8("message.kind")
        guard let tag = Tag(rawValue: raw) else {
            throw .unknownKind(field: "message.kind", offset: reader.offset - 1, raw: UInt64(raw))
        }
        switch tag {
        case .prePrepare: self = .prePrepare(try Signed(from: &reader))
        case .vote: self = .vote(try Signed(from: &reader))
        case .checkpoint: self = .checkpoint(try Signed(from: &reader))
        case .viewChange: self = .viewChange(try Signed(from: &reader))
        case .newView: self = .newView(try Signed(from: &reader))
        case .stateRequest: self = .stateRequest(fromSeq: try reader.readUInt64("stateRequest.fromSeq"))
        case .stateResponse:
            self = .stateResponse(try reader.readArray("stateResponse.blocks", maximum: MessageLimits.heightsMax, of: CertifiedBlock.self))
        }
    }
}

/// The safety log's records on disk (Storage keeps them as opaque blobs).
extension SafetyRecord: WireCodable {
    public func encode(to writer: inout WireWriter) {
        switch self {
        case let .view(view, changing):
            writer.write(UInt8(1)); writer.write(view); writer.write(changing)
        case let .proposed(prePrepare):
            writer.write(UInt8(2)); writer.write(prePrepare)
        case let .voted(vote):
            writer.write(UInt8(3)); vote.encodeMessage(to: &writer)
        case let .prepared(certificate):
            writer.write(UInt8(4)); writer.write(certificate)
        case let .stable(certificate, opensEpoch):
            writer.write(UInt8(5)); writer.write(certificate); writer.write(opensEpoch)
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let offset = reader.offset
        switch try reader.readUInt8("safety.kind") {
        case 1:
            let view = try reader.readUInt64("safety.view")
            self = .view(view, changing: try reader.readBool("safety.changing"))
        case 2: self = .proposed(try Signed<PrePrepare>(from: &reader))
        case 3: self = .voted(try Vote(message: &reader))
        case 4: self = .prepared(try PreparedCertificate(from: &reader))
        case 5:
            let certificate = try CheckpointCertificate(from: &reader)
            self = .stable(certificate, opensEpoch: try reader.readBool("safety.opensEpoch"))
        case let raw: throw .unknownKind(field: "safety.kind", offset: offset, raw: UInt64(raw))
        }
    }
}
