import CalissonCrypto
import Wire

/// One TLS link (to a validator or from a client), on the loop thread: bytes from the
/// socket go through TLS and the frame decoder; frames go out through TLS to the socket.
/// Anything wrong with what the peer sends closes this link only, with a logged reason
/// and a counter.
final class Connection {
    private weak var transport: Transport?
    let stream: TCPStream
    let tls: TLSSession
    /// The validator this side dialled (nil for accepted links).
    let expected: String?
    /// A link on the client port.
    let isClient: Bool
    private(set) var peerID: String?
    /// What the peer's hello said of its release and rules.
    private(set) var peerVersion: PeerVersion?
    private(set) var isEstablished = false
    /// The handshake's end was handled (the peer's certificate checked, a peer's hello sent).
    private var handshakeHandled = false
    private var decoder: FrameDecoder
    /// When it last heard from its peer and answered it, its requests, its rate bucket.
    private var times: LinkTimes
    /// Frames sent during this turn of the loop, encrypted and written together once the
    /// turn's callbacks are done (`writeGathered`, from the transport's loop hooks): one
    /// TLS write and one socket write per turn instead of one each per frame.
    private var gathered: [UInt8] = []
    private var isGathering = false
    /// A client's requests are answered in the order they came (a client matches answers
    /// to requests by order): an answer ready before those of earlier requests (a read
    /// answered off the loop, before a submission's admission) waits for them here.
    /// Bounded by `clientRequestsInFlightMax`.
    private var requestsNumbered: UInt64 = 0
    private var answersSent: UInt64 = 0
    private var answersWaiting: [UInt64: [UInt8]] = [:]
    private var isClosed = false
    /// Its frames wait for the loop's time for clients (`ClientTurns`); its socket is not read.
    private(set) var isWaitingForTurn = false
    let address: String
    /// The peer's IP address (for the per-address client limit).
    let host: String
    private(set) var negotiated = ""

    var isDialer: Bool { expected != nil }
    /// A client link holding more than this unsent has the client links' total checked.
    static let clientQueueCheckedFrom = 1 << 20
    /// A client connection's name (a link to a validator has one too, never used).
    let clientLink: ClientLink
    /// In the order the transport made its connections (the oldest handshake is closed first).
    let number: UInt64

    init(transport: Transport, stream: TCPStream, tls: TLSSession, expected: String?, isClient: Bool) {
        self.transport = transport
        self.stream = stream
        self.tls = tls
        self.expected = expected
        self.isClient = isClient
        // What a client sends is requests (`clientFrameSizeMax`); a peer, blocks.
        decoder = FrameDecoder(maximum: isClient ? TransportLimits.clientFrameSizeMax : TransportLimits.frameSizeMax)
        address = stream.peerAddress
        host = stream.peerHost
        times = LinkTimes(now: now(transport.loop), requestsPerSecond: transport.configuration.clientRequestsPerSecondMax)
        clientLink = isClient ? transport.nextClientLink() : ClientLink(number: 0)
        number = transport.nextConnectionNumber()
    }

    /// What the heartbeat does with this link at `now` (`LinkTimes.beat`).
    func beat(now: UInt64, idleLimit: UInt64, deadAfter: UInt64) -> LinkTimes.Beat {
        // Requests waiting for their turn are not idleness.
        if isWaitingForTurn { return .keep }
        return times.beat(now: now, isClient: isClient, isEstablished: isEstablished, idleLimit: idleLimit, deadAfter: deadAfter)
    }

    func begin() {
        stream.startReading(onBytes: { [weak self] bytes in self?.receive(bytes) }, onEnd: { [weak self] error in
            self?.close(reason: error.map { "socket: \($0)" } ?? "closed by the peer")
        })
        if isDialer {
            do { try tls.start() } catch { return fail(handshake: "\(error)") }
            flush()
        }
    }

    private func receive(_ bytes: UnsafeRawBufferPointer) {
        guard !isClosed, let transport else { return }
        transport.count { $0.bytesIn += bytes.count }
        let plaintext: [UInt8]
        do {
            plaintext = try tls.receive(bytes)
        } catch {
            if case .handshake = error { return fail(handshake: "\(error)") }
            flush()
            return close(reason: "\(error)")
        }
        if tls.isHandshakeDone && !handshakeHandled {
            handshakeHandled = true
            negotiated = tls.negotiated
            if !isClient, let problem = transport.admit(tls.peerCertificate, expected: expected) {
                transport.refused(self, reason: problem)
                return refuse(problem, reason: problem)
            }
            // Peers send their hellos at once, both ways; a client gets the node's hello only
            // once its own is accepted, so that a refused client hears the refusal first.
            if !isClient { sendHello(transport) }
        }
        decoder.append(plaintext)
        handleFrames(transport, inTurn: false)
        if isClosed { return }
        if tls.peerClosed, !isWaitingForTurn { return close(reason: "\(TLSSession.Failure.closedByPeer)") }
        if let unwritten = unwrittenPastBound(transport) { return closeSlow(transport, reason: "\(unwritten) bytes unwritten, TLS records it asked for included") }
        flush()
    }

    /// What the peer's own records make OpenSSL answer (a KeyUpdate that asks for one back,
    /// for each it sends) goes out with no frame sent, so `send`'s rule never sees it: a
    /// peer that asks and never reads would have the node hold its answers without end.
    /// They count against the link's bound like frames: the queue past it (a client's
    /// share, four times a validator link's limit), what is unwritten is returned.
    private func unwrittenPastBound(_ transport: Transport) -> Int? {
        let pending = stream.queuedBytes + tls.outgoingCount
        let configuration = transport.configuration
        let bound = isClient ? configuration.clientSendQueueBytesMax : 4 * configuration.sendQueueBytesMax
        if pending > bound { return pending }
        // And all client links together, as `send` holds them (checked past 1 MiB here).
        if isClient, pending > min(Self.clientQueueCheckedFrom, bound), transport.clientUnwrittenBytes() + tls.outgoingCount > configuration.clientSendQueueTotalBytesMax {
            return pending
        }
        return nil
    }

    private func closeSlow(_ transport: Transport, reason: String) {
        transport.count { $0.slowConsumersClosed += 1 }
        transport.refused(self, reason: "slow consumer: \(reason)")
        close(reason: "slow consumer")
    }

    /// Handles the whole frames decoded. On an established client link, while the loop's
    /// time for clients allows (`Transport.clientTurns`): past it, the link waits for its
    /// turn, its socket no longer read. `inTurn`: the link's turn, one request.
    private func handleFrames(_ transport: Transport, inTurn: Bool) {
        var requests = 0
        do {
            while !isClosed {
                if isClient, isEstablished, decoder.hasWholeFrame, inTurn ? requests > 0 : !transport.clientTurns.allowsNewWork {
                    if !isWaitingForTurn {
                        isWaitingForTurn = true
                        stream.stopReading()
                        transport.count { $0.clientTurnsWaited += 1 }
                        transport.clientTurns.wait(self)
                    }
                    return
                }
                guard let envelope = try decoder.next() else { break }
                transport.count { $0.framesIn += 1 }
                // On a client link only a request is use: empty heartbeats sent to keep a
                // place would otherwise hold it for ever, from others.
                if !isClient || envelope.kind == .request { times.received(at: now(transport.loop)) }
                if envelope.kind == .request { requests += 1 }
                try handle(envelope, transport)
            }
        } catch {
            switch error {
            case .oversized: transport.count { $0.oversizedFrames += 1 }
            case .malformed, .unexpected: transport.count { $0.malformedFrames += 1 }
            }
            transport.refused(self, reason: "\(error)")
            return refuse("\(error)", reason: "\(error)")
        }
        if isWaitingForTurn, !isClosed {
            isWaitingForTurn = false
            stream.resumeReading()
        }
    }

    /// This link's turn for the loop's time for clients (`ClientTurns`): one request is
    /// handled. True when it has more whole frames and waits for its next turn; false when
    /// it has none (its socket is read again) or is closed.
    func takeTurn() -> Bool {
        guard let transport, !isClosed else { return false }
        handleFrames(transport, inTurn: true)
        guard !isClosed else { return false }
        if !isWaitingForTurn, tls.peerClosed {
            close(reason: "\(TLSSession.Failure.closedByPeer)")
            return false
        }
        flush()
        return isWaitingForTurn
    }

    private func handle(_ envelope: Envelope<TransportKind>, _ transport: Transport) throws(FrameError) {
        guard isEstablished else {
            if envelope.kind == .refusal, !isClient {
                let said = String(decoding: envelope.payload.prefix(TransportLimits.refusalBytesMax), as: UTF8.self)
                transport.refusedBy(self, reason: said)
                return close(reason: "refused by the peer: \(said)")
            }
            guard envelope.kind == .hello else { throw .unexpected(envelope.kind) }
            let hello: Hello
            do { hello = try envelope.decodePayload(as: Hello.self) } catch { throw .malformed(error) }
            return accept(hello, transport)
        }
        switch envelope.kind {
        case .heartbeat:
            if !isClient, !envelope.payload.isEmpty { transport.heard(envelope.payload, on: self) }
        case .consensus, .gossip:
            guard !isClient else { throw .unexpected(envelope.kind) }
            transport.received(envelope.kind, envelope.payload, on: self)
        case .request:
            guard isClient else { throw .unexpected(envelope.kind) }
            guard times.requestsInFlight < transport.configuration.clientRequestsInFlightMax else {
                transport.refused(self, reason: "over \(transport.configuration.clientRequestsInFlightMax) requests in flight")
                return refuse("over \(transport.configuration.clientRequestsInFlightMax) requests in flight", reason: "too many requests in flight")
            }
            let rate = transport.configuration.clientRequestsPerSecondMax
            guard times.takeRequest(at: times.lastReceived, rate: rate) else {
                transport.count { $0.clientRateLimited += 1 }
                transport.refused(self, reason: "over \(rate) requests per second")
                return refuse("over \(rate) requests per second", reason: "too many requests per second")
            }
            transport.request(envelope.payload, on: self)
        case .hello, .response, .refusal:
            throw .unexpected(envelope.kind)
        }
    }

    private func accept(_ hello: Hello, _ transport: Transport) {
        let configuration = transport.configuration
        guard hello.versions.overlaps(TransportLimits.protocolVersions) else {
            transport.refused(self, reason: "protocol versions \(hello.versions) not supported")
            return refuse("protocol versions \(hello.versions) not supported here (\(TransportLimits.protocolVersions))", reason: "protocol version")
        }
        // What the peer wrote is quoted with its line breaks and quotes escaped
        // (`debugDescription`): a log line of its own making cannot start inside ours.
        guard hello.chainId == configuration.chainId else {
            transport.refused(self, reason: "chain \(hello.chainId.debugDescription) is not '\(configuration.chainId)'")
            return refuse("chain \(hello.chainId.debugDescription) is not '\(configuration.chainId)'", reason: "wrong chain")
        }
        if isClient {
            isEstablished = true
            peerID = "client \(address)"
            return sendHello(transport)
        }
        guard let certificate = tls.peerCertificate, certificate.commonName == hello.partnerID else {
            transport.refused(self, reason: "hello names \(hello.partnerID.debugDescription), certificate another partner")
            return refuse("the hello names \(hello.partnerID.debugDescription), the certificate another partner", reason: "identity mismatch")
        }
        peerID = hello.partnerID
        peerVersion = hello.about
        isEstablished = true
        guard transport.established(self, peer: hello.partnerID) else {
            transport.refused(self, reason: "inbound link from \(hello.partnerID): the lower id dials")
            peerID = nil
            return refuse("\(configuration.selfID) dials \(hello.partnerID), not the other way (the lower id dials)", reason: "wrong direction")
        }
    }

    /// Bytes on their way to the peer: handed to the socket, and gathered this turn.
    var queuedBytes: Int { stream.queuedBytes + gathered.count }

    /// Sends a frame if the link is up. Applies the back-pressure rule: over the queue
    /// limit gossip is dropped; over four times the limit the link is closed.
    func send(_ kind: TransportKind, _ payload: [UInt8]) {
        guard payload.count <= WireLimits.envelopePayloadSizeMax else {
            transport?.count { $0.oversizedFrames += 1 }
            transport?.logger.error("frame not sent: over the size limit", metadata: ["kind": "\(kind)", "bytes": "\(payload.count)"])
            return
        }
        send(kind, frame: FrameDecoder.frame(kind, payload))
    }

    /// Sends a frame already made (`FrameDecoder.frame`, within the size limit): a
    /// broadcast makes it once for every link.
    func send(_ kind: TransportKind, frame: [UInt8]) {
        guard isEstablished, !isClosed, let transport else { return }
        // A client is judged by what earlier turns' answers left unwritten (its socket did not
        // take them), not by this turn's: a burst of large answers to pipelined requests
        // goes out whole to a client that reads.
        let unwritten = stream.queuedBytes
        if isClient, unwritten > min(Self.clientQueueCheckedFrom, transport.configuration.clientSendQueueBytesMax) {
            let configuration = transport.configuration
            if unwritten > configuration.clientSendQueueBytesMax || transport.clientUnwrittenBytes() > configuration.clientSendQueueTotalBytesMax {
                return closeSlow(transport, reason: "\(unwritten) bytes of answers not taken")
            }
        }
        let limit = transport.configuration.sendQueueBytesMax
        if queuedBytes > limit {
            if kind == .gossip || kind == .heartbeat {
                if kind == .gossip { transport.count { $0.gossipDropped += 1 } }
                return
            }
            if queuedBytes > 4 * limit {
                return closeSlow(transport, reason: "\(queuedBytes) bytes queued")
            }
        }
        gathered.append(contentsOf: frame)
        transport.count { $0.framesOut += 1 }
        if !isGathering {
            isGathering = true
            transport.gathering(self)
        }
    }

    /// Encrypts and writes the frames gathered this turn (the transport's loop hooks).
    func writeGathered() {
        isGathering = false
        guard !gathered.isEmpty, !isClosed else { return }
        do { try tls.send(gathered) } catch { return close(reason: "\(error)") }
        // A burst's buffer is not kept for the link's life.
        if gathered.capacity > 1 << 16 { gathered = [] } else { gathered.removeAll(keepingCapacity: true) }
        flush()
    }

    /// Sends a frame at once (the hello, before the link carries anything else).
    private func write(_ kind: TransportKind, _ payload: [UInt8]) {
        do {
            try tls.send(FrameDecoder.frame(kind, payload))
            transport?.count { $0.framesOut += 1 }
        } catch {
            close(reason: "\(error)")
        }
    }

    /// The number of the request just received, for its answer (`finishRequest`).
    func numberRequest() -> UInt64 {
        defer { requestsNumbered += 1 }
        return requestsNumbered
    }

    /// Request `number`'s answer: sent once every earlier request's is.
    func finishRequest(_ number: UInt64, _ response: [UInt8]) {
        guard !isClosed else { return }
        answersWaiting[number] = response
        while let next = answersWaiting.removeValue(forKey: answersSent) {
            answersSent += 1
            times.answered(at: transport.map { now($0.loop) } ?? 0)
            send(.response, next)
        }
    }

    /// Hands the ciphertext TLS has ready to the socket, in one write.
    private func flush() {
        let count = tls.outgoingCount
        guard count > 0 else { return }
        transport?.count {
            $0.bytesOut += count
            $0.socketWrites += 1
        }
        stream.write(count: count) { tls.readOutgoing(into: $0) }
    }

    private func fail(handshake reason: String) {
        flush()  // the alert, if any
        transport?.count { $0.handshakeFailures += 1 }
        transport?.refused(self, reason: reason)
        close(reason: reason)
    }

    private func sendHello(_ transport: Transport) {
        let hello = Hello(
            versions: TransportLimits.protocolVersions, chainId: transport.configuration.chainId, partnerID: transport.configuration.selfID,
            about: transport.configuration.about)
        write(.hello, hello.wireBytes)
    }

    /// Tells a peer or a client why its link is refused, then closes it.
    private func refuse(_ said: String, reason: String) {
        if tls.isHandshakeDone, !isClosed {
            write(.refusal, Array(said.utf8.prefix(TransportLimits.refusalBytesMax)))
        }
        close(reason: reason)
    }

    func close(reason: String) {
        guard !isClosed else { return }
        isClosed = true
        if isWaitingForTurn {
            isWaitingForTurn = false
            transport?.clientTurns.forget(self)
        }
        if tls.isHandshakeDone {
            if !gathered.isEmpty { try? tls.send(gathered) }  // what this turn sent goes before the close
            gathered = []
            tls.shutdown()
            flush()
        }
        stream.stopReading()
        stream.close()
        isEstablished = false
        transport?.closed(self, reason: reason)
    }
}
