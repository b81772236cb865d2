import Consensus
import CalissonCrypto
import Ledger
import NodeCore
import Wire

/// A whole cluster in one thread, driven by one seed: the same seed replays the same
/// run exactly. A safety phase with faults is followed by a liveness phase in which the
/// network heals, crashed replicas restart (Byzantine ones stay, at most f), and every
/// command submitted must become final on every honest replica.
public struct Simulation {
    public static let chainId = "calisson-sim"
    static let traceLengthMax = 80

    let configuration: SimulationConfiguration
    var random: SplitMix64
    var nodes: [SimulatedNode] = []
    var indexOf: [ValidatorID: Int] = [:]
    /// The second replica of a twinned identity, by the first one's index.
    var twinOf: [Int: Int] = [:]
    let replicaConfiguration: ReplicaConfiguration
    var network = Network()
    var tick = 0
    var report: SimulationReport
    var finalized: [UInt64: SHA256Digest] = [:]
    var roots: [UInt64: SHA256Digest] = [:]
    var submitted: [SHA256Digest] = []
    var commandBytes: [SHA256Digest: [UInt8]] = [:]
    var finalCommands: Set<SHA256Digest> = []
    /// Clients resubmit commands not yet final at this interval (ticks).
    static let resubmitTicks = 100
    var partition: (side: Set<Int>, until: Int)?
    var healed = false
    var trace: [String] = []
    var sentByKind: [String: Int] = [:]
    /// Validator-set change: the tick its command is submitted, and the set it installs
    /// (one genesis validator removed, the learner node admitted).
    var reconfiguration: (at: Int, validators: ValidatorSet)?
    /// Ledger runs: the governance the clients carry out, each proposal with its command
    /// id and whether the other partners' votes were sent (once it is final): the
    /// validator-set change, an upgrade to the newest ledger rules voted at the start, and from its
    /// height acceptance by category (a partner's category, a programme's acceptance).
    var governance: [GovernanceStep] = []
    var categoriesProposed = false
    /// Upgrade proposals made, and the tick of the last: one that did not pass before its
    /// height (votes stalled by faults) is proposed again, further ahead, under a new name.
    var upgradeAttempts = 0
    var lastUpgradeTick = 0
    /// Ledger runs: the slots whose equivocation evidence a client reported, the evidence
    /// and its reporter, and whether it was reported with the rules that know it in force
    /// (evidence found before is reported again once they are).
    var reportedSlots: Set<StateKey> = []
    var evidenceFound: [(evidence: EquivocationEvidence, reporter: Int, underRules: Bool)] = []
    var evidenceRulesInForce = false
    /// Ledger runs: whether the partners have said where their nodes listen (rules 4).
    var endpointsSent = false
    static let evidenceReportsMax = 64

    struct GovernanceStep {
        let action: GovernanceAction
        let proposer: Int
        let id: SHA256Digest
        var votesSent = false
    }

    /// Blocks between the upgrade's proposal and its height: room for the votes under faults.
    static let upgradeDistance: UInt64 = 60
    /// Ticks after which an upgrade not voted yet is proposed again.
    static let upgradeRetryTicks = 400
    /// (epoch first height, view) pairs entered by some honest replica, view > 0.
    var viewsEntered: Set<[UInt64]> = []
    var epochsEntered: Set<UInt64> = []
    /// Ledger runs: the consortium's genesis and its clients' traffic.
    var traffic: LedgerTraffic?
    /// Ledger runs: a node's partner id ↔ its index (a twin shares its original's id).
    var partnerIndex: [String: Int] = [:]
    /// Ledger runs: what each client submission carried, and the transactions some honest
    /// node admitted (those must all be final by the end).
    var clientCommands: [ClientToken: SHA256Digest] = [:]
    var nextClient: UInt64 = 0
    var admitted: Set<SHA256Digest> = []
    /// Ledger runs: transactions a node refused for good (garbage, forgeries): their
    /// clients do not send them again.
    var refused: Set<SHA256Digest> = []

    public static func run(_ configuration: SimulationConfiguration) -> SimulationReport {
        var simulation = Simulation(configuration)
        return simulation.run()
    }

    init(_ configuration: SimulationConfiguration) {
        self.configuration = configuration
        random = SplitMix64(seed: configuration.seed)
        report = SimulationReport(seed: configuration.seed, validators: configuration.validators)
        var keys = SplitMix64(seed: 0x5EED_0000 &+ UInt64(configuration.validators))
        let ids = (0..<configuration.validators).map { _ in Ed25519PublicKey(keys.bytes32()) }
        var replica = ReplicaConfiguration(chainId: Self.chainId, validators: ValidatorSet(ids)!)
        replica.checkpointInterval = configuration.checkpointInterval
        replica.window = configuration.window
        replica.batchCommandsMax = configuration.batchCommandsMax
        replica.checkpointFillTicks = configuration.checkpointFillTicks
        replicaConfiguration = replica
        let faultsMax = replica.validators.faultsMax
        // With validator-set changes, one more node runs from the start as a learner
        // (following the chain without a vote) until the change admits it: in a ledger
        // run, a partner of the genesis with a validator's role and node key, outside the set.
        let learners = configuration.faults.validatorChanges ? [Ed25519PublicKey(keys.bytes32())] : []
        if configuration.application == .ledger {
            traffic = LedgerTraffic(validators: ids, learner: learners.first, seed: configuration.seed, epochLength: configuration.ledgerEpochLength)
        }
        for (index, id) in (ids + learners).enumerated() {
            var node = SimulatedNode(index: index, signer: SimulatedSigner(id: id))
            start(&node, new: true)
            if configuration.faults.tickSkew, random.next() % 2 == 0 { node.skewPeriod = 5 + Int(random.next() % 16) }
            nodes.append(node)
            indexOf[id] = index
            if traffic != nil { partnerIndex["p\(index)"] = index }
        }
        // Byzantine validators: at most f, chosen by the seed among the genesis set.
        let byzantine = configuration.faults.byzantine.prefix(faultsMax)
        var candidates = Array(0..<configuration.validators)
        for behaviour in byzantine {
            let pick = candidates.remove(at: Int(random.next() % UInt64(candidates.count)))
            nodes[pick].byzantine = behaviour
            if behaviour == .twins {
                var twin = SimulatedNode(index: nodes.count, signer: nodes[pick].signer)
                twinOf[pick] = nodes.count
                start(&twin, new: true)
                twin.byzantine = .twins
                nodes.append(twin)
            }
        }
        // Governance replaces an honest genesis validator by the learner, during the
        // safety phase; the removed one goes on as a learner (and is checked as honest).
        if let learner = learners.first, !candidates.isEmpty {
            let removed = candidates[Int(random.next() % UInt64(candidates.count))]
            let set = ValidatorSet(ids.filter { $0 != ids[removed] } + [learner])!
            let quarter = max(1, configuration.safetyTicks / 4)
            reconfiguration = (quarter + Int(random.next() % UInt64(quarter)), set)
        }
    }

    /// Starts `node`: a new one from the genesis, or a crashed one from what it persisted
    /// (the safety log and the executed blocks with their state).
    mutating func start(_ node: inout SimulatedNode, new: Bool) {
        guard let traffic else {
            if new { node.application = CounterApplication(schedule: replicaConfiguration.genesisSchedule) }
            node.replica = Replica(
                configuration: replicaConfiguration, signer: node.signer, safety: node.safety, lastExecuted: node.height,
                schedule: node.application!.schedule)
            return
        }
        if new {
            // The state durable at every second checkpoint once certified, each node at its own,
            // as a node's at every few: a crash loses what is above it, executed again at the
            // restart.
            let storage = SimulatedStorage(stateInterval: configuration.checkpointInterval, writeEvery: 2, writeOffset: UInt64(clamping: node.index))
            let citizens = traffic.citizens
            storage.audit = { state in
                guard let ledger = try? Ledger(chainId: Self.chainId, store: state) else { return ["the ledger does not open on its storage"] }
                return ledgerViolations(ledger, citizens: citizens)
            }
            node.storage = storage
        }
        let partner = "p\(twinOriginal(node.index))"
        let partners = (traffic.partners + [traffic.learner].compactMap { $0 }).map(\.rawValue)
        var settings = NodeCoreSettings()
        settings.stateResponseBytesMax = configuration.stateResponseBytesMax
        do {
            node.core = try NodeCore(
                storage: node.storage!, genesis: traffic.genesis, replica: replicaConfiguration, signer: node.signer,
                peers: partners.filter { $0 != partner }, settings: settings, verifySignature: simulatedVerify)
        } catch {
            violation(safety: "n\(node.index) does not start from its storage: \(error)")
        }
    }

    /// Where a message for node `target` from node `from` goes: to a twinned identity,
    /// even-numbered senders reach the first twin and odd-numbered ones the second.
    func route(_ target: Int, from: Int) -> Int {
        if let twin = twinOf[target], from % 2 == 1 { return twin }
        return target
    }

    /// The nodes a broadcast from `index` reaches: every identity but its own, once.
    func broadcastTargets(from index: Int) -> [Int] {
        let twins = Set(twinOf.values)
        return nodes.indices.filter { !twins.contains($0) && nodes[$0].id != nodes[index].id }.map { route($0, from: index) }
    }

    var faultsMax: Int { replicaConfiguration.validators.faultsMax }
    /// The highest height an honest node executed.
    var honestHeight: UInt64 { honest.map { nodes[$0].height }.max() ?? 0 }
    var honest: [Int] { nodes.indices.filter { nodes[$0].byzantine == nil } }

    mutating func note(_ event: String) {
        if configuration.liveTrace { print("t=\(tick) \(event)") }
        trace.append("t=\(tick) \(event)")
        if trace.count > Self.traceLengthMax { trace.removeFirst(trace.count - Self.traceLengthMax) }
    }

    mutating func run() -> SimulationReport {
        let end = configuration.safetyTicks + configuration.livenessTicks
        // Commands stop early enough in the liveness phase for the last ones to finish.
        let submitUntil = configuration.safetyTicks + configuration.livenessTicks / 2
        while tick < end {
            tick += 1
            if tick == configuration.safetyTicks + 1 { heal() }
            if !healed { injectFaults() }
            restartDue()
            if tick <= submitUntil { submitCommands() }
            if let reconfiguration, reconfiguration.at == tick {
                let members = reconfiguration.validators.validators.compactMap { indexOf[$0] }
                if traffic != nil {
                    propose(.setValidators(members.sorted().map { Identifier("p\($0)")! }), by: 0)
                } else {
                    submit(CounterApplication.reconfiguration(reconfiguration.validators))
                }
                note("submitted validator set \(members)")
            }
            if traffic != nil, tick <= submitUntil { governanceTick() }
            if tick % Self.resubmitTicks == 0 { resubmitPending() }
            deliver()
            for index in nodes.indices where nodes[index].isUp {
                let period = nodes[index].skewPeriod
                if period > 0, !healed, tick % period == 0 { continue }
                if traffic != nil {
                    drive(index, .tick)
                } else {
                    step(index, .tick(pendingCommands: nodes[index].mempool.pendingCount(tick: UInt64(clamping: tick))))
                }
            }
        }
        checkLiveness()
        report.finalizedHeight = honest.map { nodes[$0].height }.max() ?? 0
        report.commandsSubmitted = submitted.count
        report.commandsAdmitted = admitted.count
        for node in nodes {
            for (fault, count) in node.storage?.fired ?? [:] { report.storageFaultsFired["\(fault)", default: 0] += count }
            report.blocksExecutedAgain += node.storage?.blocksExecutedAgain ?? 0
        }
        if let ledger = honestLedger() {
            report.rulesInForce = ledger.rules(atHeight: ledger.height)
            report.acceptanceByCategory = ledger.acceptance(Identifier("tri")!) == [.event]
                && ledger.partnerCategory(traffic!.partners[traffic!.partners.count - 1]) == .event
            report.equivocationsRecorded = ledger.partnerIDs.reduce(0) { $0 + (ledger.equivocationTally($1)?.count ?? 0) }
            report.endpointsListed = traffic!.partners.allSatisfy { ledger.endpoints($0) == Self.endpoints(of: $0) }
        }
        report.trace = trace
        return report
    }

    // MARK: Faults

    private mutating func injectFaults() {
        let faults = configuration.faults
        // A node with a storage fault armed counts as down: the fault may stop it any time.
        var down: Int { nodes.filter { !$0.isUp || $0.storage?.isArmed == true }.count }
        if faults.crashes, random.next() % 150 == 0 {
            let up = honest.filter { nodes[$0].isUp }
            if down < faultsMax, !up.isEmpty {
                let victim = up[Int(random.next() % UInt64(up.count))]
                nodes[victim].replica = nil
                nodes[victim].core = nil
                nodes[victim].storage?.crash()
                nodes[victim].mempool.clear()
                nodes[victim].restartAt = tick + 20 + Int(random.next() % 200)
                report.crashes += 1
                note("crash n\(victim)")
            }
        }
        if faults.storageFaults, traffic != nil, random.next() % 100 == 0 {
            let up = honest.filter { nodes[$0].isUp && nodes[$0].storage?.isArmed == false }
            if down < faultsMax, !up.isEmpty {
                let victim = up[Int(random.next() % UInt64(up.count))]
                let fault = [StorageFault.readError, .diskFull, .crashDuringWrite][Int(random.next() % 3)]
                nodes[victim].storage?.arm(fault)
                report.storageFaults += 1
                note("n\(victim): \(fault) armed")
            }
        }
        if faults.partitions {
            if let current = partition, tick >= current.until { partition = nil; note("partition healed") }
            if partition == nil, random.next() % 250 == 0 {
                var side = Set<Int>()
                for index in nodes.indices where random.next() % 2 == 0 { side.insert(index) }
                if !side.isEmpty && side.count < nodes.count {
                    partition = (side, tick + 30 + Int(random.next() % 250))
                    note("partition \(side.sorted()) | rest")
                }
            }
        }
    }

    private mutating func heal() {
        healed = true
        partition = nil
        for index in nodes.indices where !nodes[index].isUp { nodes[index].restartAt = tick }
        for node in nodes { node.storage?.disarm() }
        note("heal: network repaired, crashed replicas restart")
    }

    private mutating func restartDue() {
        for index in nodes.indices {
            guard let at = nodes[index].restartAt, at <= tick else { continue }
            nodes[index].restartAt = nil
            // Only what was persisted survives: the safety log and the executed blocks.
            var node = nodes[index]
            nodes[index].core = nil  // one copy of the node at a time
            start(&node, new: false)
            nodes[index] = node
            if let ledger = nodes[index].core?.ledger { checkRecovered(index, ledger.height, ledger.stateRoot) }
            note("restart n\(index) at height \(nodes[index].height) view \(nodes[index].core?.replica.view ?? nodes[index].safety.view)")
        }
    }

    private mutating func submitCommands() {
        let count = Int(random.next() % UInt64(2 * configuration.commandsPerTick + 1))
        // Ledger transactions expire a while after the highest honest height.
        let height = traffic == nil ? 0 : honestHeight
        for _ in 0..<count {
            if traffic != nil {
                submit(traffic!.next(height: height))
                continue
            }
            var writer = WireWriter()
            writer.write(UInt64(submitted.count))
            writer.write(random.next())
            submit(writer.bytes)
        }
    }

    /// Ledger runs: proposes the upgrade at the start, acceptance by category once the
    /// upgrade is in force on an honest node, and sends the votes of each proposal final.
    mutating func governanceTick() {
        let voted = honestLedger().map { !$0.upgrades.upgrades.isEmpty } ?? false
        if tick == 1 || (!voted && tick - lastUpgradeTick >= Self.upgradeRetryTicks) {
            upgradeAttempts += 1
            lastUpgradeTick = tick
            let upgrade = ScheduledUpgrade(
                name: Identifier("rules-\(LedgerRules.newest)-\(upgradeAttempts)")!, height: honestHeight + Self.upgradeDistance, rules: LedgerRules.newest)
            propose(.scheduleUpgrade(upgrade), by: 1 % traffic!.partners.count)
            note("proposed upgrade \(upgrade.name) to rules \(upgrade.rules) at height \(upgrade.height)")
        }
        if !categoriesProposed, let ledger = honestLedger(), ledger.rules(atHeight: ledger.height) >= LedgerRules.acceptanceByCategory {
            categoriesProposed = true
            let partners = traffic!.partners
            propose(.setPartnerCategory(partners[partners.count - 1], .event), by: 0)
            propose(.setProgrammeAcceptance(Identifier("tri")!, [.event]), by: 0)
            note("rules \(ledger.rules(atHeight: ledger.height)) in force: proposed acceptance by category")
        }
        if !endpointsSent, let ledger = honestLedger(), ledger.rules(atHeight: ledger.height) >= LedgerRules.endpoints {
            // Each partner but the last says where its node listens; governance says it for the last.
            endpointsSent = true
            let partners = traffic!.partners
            for index in partners.indices.dropLast() {
                submit(traffic!.setEndpoints(Self.endpoints(of: partners[index]), by: index, height: honestHeight))
            }
            propose(.setPartnerEndpoints(partners[partners.count - 1], Self.endpoints(of: partners[partners.count - 1])), by: 0)
            note("rules \(LedgerRules.endpoints) in force: partners' endpoints set")
        }
        if !evidenceRulesInForce, let ledger = honestLedger(), ledger.rules(atHeight: ledger.height) >= LedgerRules.evidence {
            evidenceRulesInForce = true
            for index in evidenceFound.indices where !evidenceFound[index].underRules {
                evidenceFound[index].underRules = true
                submit(traffic!.report(evidenceFound[index].evidence, by: evidenceFound[index].reporter, height: honestHeight))
            }
            if !evidenceFound.isEmpty { note("rules \(LedgerRules.evidence) in force: equivocation evidence reported again") }
        }
        for index in governance.indices where !governance[index].votesSent && finalCommands.contains(governance[index].id) {
            let step = governance[index]
            guard let number = proposalNumber(step.action, by: traffic!.partners[step.proposer]) else { continue }
            governance[index].votesSent = true
            for vote in traffic!.votes(on: number, except: step.proposer, height: honestHeight) { submit(vote) }
            note("proposal \(number) is final: votes submitted")
        }
    }

    /// Where a simulated partner's node listens (names of the reserved `.example` domain).
    static func endpoints(of partner: Identifier) -> [PeerEndpoint] {
        [PeerEndpoint(host: "node.\(partner.rawValue).example", port: 7_000)!]
    }

    private mutating func propose(_ action: GovernanceAction, by proposer: Int) {
        let bytes = traffic!.proposal(action, by: proposer, height: honestHeight)
        governance.append(GovernanceStep(action: action, proposer: proposer, id: Block(seq: 0, commands: [bytes]).commandIDs[0]))
        submit(bytes)
    }

    /// The ledger of an honest node up (the most advanced).
    func honestLedger() -> Ledger<SimulatedState>? {
        honest.filter { nodes[$0].isUp }.compactMap { nodes[$0].core?.ledger }.max { $0.height < $1.height }
    }

    /// The number of `proposer`'s proposal of `action`, from an honest node's ledger.
    func proposalNumber(_ action: GovernanceAction, by proposer: Identifier) -> UInt64? {
        guard let ledger = honestLedger() else { return nil }
        var number = ledger.meta.nextProposal
        while number > 1 {
            number -= 1
            if let proposal = ledger.proposal(number), proposal.action == action, proposal.proposer == proposer { return number }
        }
        return nil
    }

    private mutating func submit(_ bytes: [UInt8]) {
        let id = Block(seq: 0, commands: [bytes]).commandIDs[0]
        submitted.append(id)
        commandBytes[id] = bytes
        offer(id, bytes)
    }

    /// A client sends a command to every node up: into the mempool of a counter run, to
    /// admission in a ledger run.
    private mutating func offer(_ id: SHA256Digest, _ bytes: [UInt8]) {
        for index in nodes.indices where nodes[index].isUp {
            guard traffic != nil else {
                nodes[index].admit(id, bytes)
                continue
            }
            nextClient += 1
            let client = ClientToken(nextClient)
            clientCommands[client] = id
            drive(index, .submit(bytes, client: client))
        }
    }

    /// A client whose command is not final after a while sends it again, as partner
    /// back-ends do: a command lost from every mempool (each holder crashed) comes back.
    private mutating func resubmitPending() {
        for id in submitted where !finalCommands.contains(id) && !refused.contains(id) {
            guard let bytes = commandBytes[id] else { continue }
            offer(id, bytes)
        }
    }

    // MARK: Network

    mutating func transmit(from: Int, to: Int, _ message: Message) {
        if configuration.liveTrace {
            let kind: String
            switch message {
            case .prePrepare: kind = "prePrepare"
            case .vote: kind = "vote"
            case .checkpoint: kind = "checkpoint"
            case .viewChange: kind = "viewChange"
            case .newView: kind = "newView"
            case .stateRequest: kind = "stateRequest"
            case .stateResponse: kind = "stateResponse"
            }
            sentByKind[kind + " n\(from)", default: 0] += 1
        }
        var outgoing = [message]
        if let behaviour = nodes[from].byzantine {
            outgoing = byzantine(behaviour, from: from, to: to, message)
        }
        for message in outgoing {
            let faults = healed ? FaultMix.none : configuration.faults
            if let partition, partition.side.contains(from) != partition.side.contains(to) { continue }
            if faults.lossRate > 0, Double(random.next() % 10_000) / 10_000 < faults.lossRate { continue }
            let copies = faults.duplicateRate > 0 && Double(random.next() % 10_000) / 10_000 < faults.duplicateRate ? 2 : 1
            for _ in 0..<copies {
                let span = UInt64(faults.delayTicks.count)
                let delay = faults.delayTicks.lowerBound + Int(random.next() % span)
                network.push(at: tick + delay, from: from, to: to, message)
            }
        }
    }

    private mutating func byzantine(_ behaviour: ByzantineBehaviour, from: Int, to: Int, _ message: Message) -> [Message] {
        let signer = nodes[from].signer
        switch behaviour {
        case .silent:
            report.byzantineMessages += 1
            return []
        case .corruptSignatures:
            guard random.next() % 2 == 0 else { return [message] }
            report.byzantineMessages += 1
            func corrupt(_ signature: Ed25519Signature) -> Ed25519Signature {
                var raw = signature.rawRepresentation
                raw[Int(random.next() % 64)] ^= 0x5a
                return Ed25519Signature(rawRepresentation: raw)!
            }
            switch message {
            case let .prePrepare(m): return [.prePrepare(Signed(body: m.body, signer: m.signer, signature: corrupt(m.signature)))]
            case let .vote(m): return [.vote(Signed(body: m.body, signer: m.signer, signature: corrupt(m.signature)))]
            case let .checkpoint(m): return [.checkpoint(Signed(body: m.body, signer: m.signer, signature: corrupt(m.signature)))]
            case let .viewChange(m): return [.viewChange(Signed(body: m.body, signer: m.signer, signature: corrupt(m.signature)))]
            case let .newView(m): return [.newView(Signed(body: m.body, signer: m.signer, signature: corrupt(m.signature)))]
            default: return [message]
            }
        case .wrongView:
            let shift = 1 + random.next() % 3
            switch message {
            case let .prePrepare(m):
                report.byzantineMessages += 1
                return [.prePrepare(Signed(PrePrepare(view: m.body.view + shift, block: m.body.block), chainId: Self.chainId, signer: signer))]
            case let .vote(m):
                report.byzantineMessages += 1
                let body = m.body
                let view = random.next() % 2 == 0 || body.view == 0 ? body.view + shift : body.view - 1
                return [.vote(Signed(Vote(kind: body.kind, view: view, seq: body.seq, digest: body.digest), chainId: Self.chainId, signer: signer))]
            default: return [message]
            }
        case .twins:
            report.byzantineMessages += 1
            return [message]
        case .equivocatingPrimary:
            guard case let .prePrepare(m) = message, to % 2 == 1 else { return [message] }
            report.byzantineMessages += 1
            let forged = Block(seq: m.body.seq, commands: m.body.block.commands + [random.bytes(16)])
            return [.prePrepare(Signed(PrePrepare(view: m.body.view, block: forged), chainId: Self.chainId, signer: signer))]
        }
    }

    private mutating func deliver() {
        if configuration.liveTrace && tick % 10 == 0 {
            print("t=\(tick) network \(network.count) packets in flight; sent \(sentByKind.sorted { $0.value > $1.value }.prefix(6))")
            sentByKind = [:]
        }
        while let packet = network.pop(dueBy: tick) {
            guard nodes[packet.to].isUp else { continue }
            if traffic != nil {  // the core checks signatures through `.verify`
                drive(packet.to, .peerMessage(packet.message.wireBytes, from: "p\(twinOriginal(packet.from))"))
                continue
            }
            // The shell's job: verify every signature the message carries before the core sees
            // it, but for a vote the replica no longer needs (as the node does).
            let sender = nodes[packet.from].id
            if nodes[packet.to].replica?.takesUnchecked(packet.message, from: sender) == true {
                report.votesUnchecked += 1
                continue
            }
            guard packet.message.signatureChecks(chainId: Self.chainId).allSatisfy(simulatedVerify) else {
                report.droppedSignatures += 1
                continue
            }
            step(packet.to, .message(packet.message, from: sender))
        }
    }

    // MARK: Replicas

    /// Steps node `index` (up) with `input` and the answers it leads to, in the order
    /// `ReplicaDriver` fixes, as the node does.
    private mutating func step(_ index: Int, _ input: Input) {
        guard nodes[index].isUp else { return }
        ReplicaDriver.drive(
            input, step: { nodes[index].replica?.step($0) ?? [] },
            persist: { records in
                for record in records {
                    nodes[index].safety.apply(record)
                    if case let .view(view, true) = record { note("n\(index) asks for view \(view)") }
                }
            },
            perform: { perform(index, $0) })
    }

    /// Carries out one action of node `index`'s replica; returns the answer it calls for.
    private mutating func perform(_ index: Int, _ action: Action) -> Input? {
        switch action {
        case .persist:
            preconditionFailure("ReplicaDriver hands safety records to persist")
        case let .send(message, to):
            if let target = indexOf[to] { transmit(from: index, to: route(target, from: index), message) }
        case let .broadcast(message):
            for target in broadcastTargets(from: index) { transmit(from: index, to: target, message) }
        case let .requestPayload(seq, commandsMax):
            return .payload(seq: seq, commands: nodes[index].mempool.take(commandsMax, tick: UInt64(clamping: tick)))
        case let .execute(certified):
            let (root, validators) = execute(index, certified)
            return .executed(seq: certified.block.seq, stateRoot: root, validators: validators)
        case let .serveState(fromSeq, to, blocksMax):
            guard let target = indexOf[to].map({ route($0, from: index) }) else { break }
            let blocks = nodes[index].application!.blocks
            let lower = Int(fromSeq) - 1, upper = min(blocks.count, lower + blocksMax)
            if lower < upper {
                report.stateTransfers += 1
                transmit(from: index, to: target, .stateResponse(Array(blocks[lower..<upper])))
            }
        case let .evidence(equivocation):
            // As the node: counted once both signatures are checked (one of its votes may
            // have been taken unchecked).
            guard equivocation.signatureChecks(chainId: Self.chainId).allSatisfy(simulatedVerify) else {
                report.droppedSignatures += 1
                break
            }
            checkEvidence(equivocation, at: index)
        case let .rejected(reason, _):
            report.rejectedMessages += 1
            report.rejectionReasons["\(reason)".prefix(while: { $0 != "(" }).description, default: 0] += 1
            if case .malformedCertificate = reason, nodes[index].byzantine == nil { note("n\(index) rejected \(reason)") }
            if case .newViewMismatch = reason, nodes[index].byzantine == nil { note("n\(index) rejected \(reason)") }
        case let .enteredView(view):
            nodes[index].mempool.releaseInFlight()
            let epoch = nodes[index].replica?.epoch.firstSeq ?? 0
            if nodes[index].byzantine == nil, view > 0, viewsEntered.insert([epoch, view]).inserted {
                report.viewChanges += 1
                note("view \(view) of epoch \(epoch) (n\(index) first)")
            }
        case let .enteredEpoch(epoch):
            if nodes[index].byzantine == nil, epochsEntered.insert(epoch.firstSeq).inserted {
                report.epochChanges += 1
                note("epoch from \(epoch.firstSeq): validators \(epoch.validators.validators.compactMap { indexOf[$0] }) (n\(index) first)")
            }
        case let .stateDiverged(seq, ours, certified):
            if nodes[index].byzantine == nil {
                violation(safety: "n\(index) state diverged at \(seq): \(ours) vs certified \(certified)")
            }
        }
        return nil
    }

    /// Executes a final block on node `index` and checks the safety invariants.
    private mutating func execute(_ index: Int, _ certified: CertifiedBlock) -> (SHA256Digest, ValidatorSet?) {
        let seq = certified.block.seq
        let honestNode = nodes[index].byzantine == nil
        if honestNode {
            // Checked against the set in force at its height, as this node's chain says.
            if !certificateIsValid(certified, validators: nodes[index].application!.schedule.validators(at: seq)) { violation(safety: "n\(index) executed \(seq) without a valid commit certificate") }
            if let digest = finalized[seq], digest != certified.block.digest {
                violation(safety: "n\(index) finalized a different block at \(seq)")
            } else {
                finalized[seq] = certified.block.digest
            }
        }
        let (root, validators) = nodes[index].application!.execute(certified)
        if honestNode {
            if let expected = roots[seq], expected != root {
                violation(safety: "n\(index) state root differs at \(seq)")
            } else {
                roots[seq] = root
            }
        }
        let executed = Set(certified.block.commandIDs)
        if honestNode { finalCommands.formUnion(executed) }
        nodes[index].mempool.remove(executed)
        return (root, validators)
    }

    func certificateIsValid(_ certified: CertifiedBlock, validators: ValidatorSet) -> Bool {
        validators.commitCertificateProblem(certified) == nil
            && certified.certificate.commits.allSatisfy { simulatedVerify($0.check(chainId: Self.chainId)) }
    }

    /// Evidence of equivocation, found by node `index`: only a Byzantine identity signs two
    /// conflicting messages; an honest replica, restarted from its safety log or not, never does.
    mutating func checkEvidence(_ equivocation: Equivocation, at index: Int) {
        report.evidence += 1
        let signer: ValidatorID? = switch equivocation.first {
        case let .prePrepare(m): m.signer
        case let .vote(m): m.signer
        default: nil
        }
        if let signer, let equivocator = indexOf[signer], nodes[equivocator].byzantine == nil {
            violation(safety: "honest n\(equivocator) signed two conflicting messages (evidence at n\(index))")
        }
        // Ledger runs: the honest node's partner reports what a transaction can carry, once
        // per slot (refused as an unknown kind until the rules that know it are in force).
        if traffic != nil, nodes[index].byzantine == nil, evidenceFound.count < Self.evidenceReportsMax,
            let evidence = EquivocationEvidence(equivocation), reportedSlots.insert(StateKeys.equivocation(evidence)).inserted {
            let reporter = twinOriginal(index) % traffic!.partners.count
            evidenceFound.append((evidence, reporter, underRules: evidenceRulesInForce))
            submit(traffic!.report(evidence, by: reporter, height: honestHeight))
            note("n\(index) reported \(evidence.kind) equivocation at view \(evidence.view), height \(evidence.seq)")
        }
    }

    mutating func violation(safety message: String) {
        report.safetyViolations.append(message)
        note("SAFETY: \(message)")
    }

    private mutating func checkLiveness() {
        let heights = Set(honest.map { nodes[$0].height })
        if heights.count > 1 {
            report.livenessViolations.append("honest replicas ended at different heights \(heights.sorted())")
        }
        // Every command must be final: in a ledger run, every one some honest node
        // admitted (admission refuses garbage and forgeries).
        let expected = traffic == nil ? submitted : submitted.filter(admitted.contains)
        for index in honest {
            let executed = nodes[index].executed
            let missing = expected.filter { !executed.contains($0) }.count
            if missing > 0 {
                report.livenessViolations.append("n\(index) never finalized \(missing) of \(expected.count) commands")
            }
        }
        // An idle ledger certifies its last blocks: the primary completed the interval.
        if configuration.checkpointFillTicks > 0 {
            for index in honest {
                guard let replica = nodes[index].replica ?? nodes[index].core?.replica else { continue }
                let height = nodes[index].height
                if replica.lowWatermark != height || height % configuration.checkpointInterval != 0 {
                    report.livenessViolations.append("n\(index) ended idle at height \(height) with its stable checkpoint at \(replica.lowWatermark)")
                }
            }
        }
        for violation in report.livenessViolations { note("LIVENESS: \(violation)") }
        if !report.livenessViolations.isEmpty {
            for index in nodes.indices {
                note("n\(index)\(nodes[index].byzantine.map { " [\($0)]" } ?? ""): \(nodes[index].summary) mempool \(nodes[index].core?.mempool.count ?? nodes[index].mempool.count)")
            }
        }
    }
}
