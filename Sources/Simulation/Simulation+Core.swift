import Consensus
import CalissonCrypto
import Ledger
import NodeCore
import Wire

// Ledger runs: each node is a `NodeCore` over `SimulatedStorage`, driven as the node's
// shell drives it. The simulator is that shell: it carries the core's messages over the
// simulated network, checks signatures at once (`simulatedVerify`), answers nothing to
// clients but records what was admitted, and checks what the core reports.
extension Simulation {
    /// Gives node `index` (up) `input`, and every input its effects lead to.
    mutating func drive(_ index: Int, _ input: NodeInput) {
        var inputs = [input]
        var next = 0
        while next < inputs.count, nodes[index].core != nil {
            let unchecked = nodes[index].core!.counters.votesUnchecked
            let effects = nodes[index].core!.drive(inputs[next])
            report.votesUnchecked += (nodes[index].core?.counters.votesUnchecked ?? unchecked) - unchecked
            next += 1
            for effect in effects {
                switch effect {
                case let .send(message, peer):
                    if case let .stateResponse(blocks) = message {
                        report.stateTransfers += 1
                        report.stateTransferBlocksMax = max(report.stateTransferBlocksMax, blocks.count)
                    }
                    if let target = partnerIndex[peer] { transmit(from: index, to: route(target, from: index), message) }
                case let .broadcast(message):
                    for target in broadcastTargets(from: index) { transmit(from: index, to: target, message) }
                case let .verify(checks, pending):
                    inputs.append(.verified(pending, checks.allSatisfy(simulatedVerify) ? .valid : .invalid))
                case let .admission(client, refusal):
                    guard let id = clientCommands.removeValue(forKey: client) else { break }
                    switch refusal {
                    case nil: if nodes[index].byzantine == nil { admitted.insert(id) }
                    case .malformed?, .wrongChain?, .badSignature?, .unknownSigner?: refused.insert(id)
                    default: break  // busy, full, a duplicate, expired or used here: the client tries again
                    }
                case let .event(event):
                    noteEvent(index, event)
                case let .stopped(reason):
                    stopped(index, reason)
                case .sendFrame, .broadcastGossip, .gossip, .forgetGossip, .respond, .respondBlocks, .partnersChanged:
                    break  // clients send to every node themselves; nobody waits for an answer
                }
            }
        }
    }

    /// The index of the validator a twin shares its identity with.
    func twinOriginal(_ index: Int) -> Int { twinOf.first { $0.value == index }?.key ?? index }

    private mutating func noteEvent(_ index: Int, _ event: NodeEvent) {
        let honestNode = nodes[index].byzantine == nil
        switch event {
        case let .executed(height, root):
            nodes[index].executedHeight = height
            let findings = nodes[index].storage?.takeFindings() ?? []
            guard honestNode else { return }
            checkExecuted(index, height: height, root: root)
            for problem in findings { violation(safety: "n\(index): \(problem)") }
        case let .evidence(equivocation):
            checkEvidence(equivocation, at: index)
        case let .rejected(reason, _):
            report.rejectedMessages += 1
            report.rejectionReasons["\(reason)".prefix(while: { $0 != "(" }).description, default: 0] += 1
        case let .enteredView(view):
            let epoch = nodes[index].core?.replica.epoch.firstSeq ?? 0
            if honestNode, view > 0, viewsEntered.insert([epoch, view]).inserted {
                report.viewChanges += 1
                note("view \(view) of epoch \(epoch) (n\(index) first)")
            }
        case let .enteredEpoch(firstSeq, validators):
            if honestNode, epochsEntered.insert(firstSeq).inserted {
                report.epochChanges += 1
                note("epoch from \(firstSeq): \(validators) validators (n\(index) first)")
            }
        case .badSignature:
            report.droppedSignatures += 1
        case let .undecodable(peer, error):
            // The simulated network carries messages the senders encoded: none is garbage.
            violation(safety: "n\(index) could not decode a message from \(peer): \(error)")
        case .handover, .verificationDropped, .peerVerificationDropped:
            break
        }
    }

    /// A block node `index` (honest) executed and persisted: certified by a quorum of the
    /// set in force at its height, the same block and state root as every other honest
    /// node's at that height. (The ledger's invariants are audited by the storage as it
    /// persists each block: one drive may execute several.)
    private mutating func checkExecuted(_ index: Int, height: UInt64, root: SHA256Digest) {
        guard let core = nodes[index].core, let certified = core.storage.certifiedBlock(at: height) else {
            return violation(safety: "n\(index) reported block \(height) executed but its storage does not hold it")
        }
        if !certificateIsValid(certified, validators: core.schedule.validators(at: height)) {
            violation(safety: "n\(index) executed \(height) without a valid commit certificate")
        }
        if let digest = finalized[height], digest != certified.block.digest {
            violation(safety: "n\(index) finalized a different block at \(height)")
        } else {
            finalized[height] = certified.block.digest
        }
        if let expected = roots[height], expected != root {
            violation(safety: "n\(index) state root differs at \(height)")
        } else {
            roots[height] = root
        }
        finalCommands.formUnion(certified.block.commandIDs)
    }

    /// Node `index` restarted from its storage at `height` with `root`: no block it had
    /// executed (and so acknowledged final to its clients) is lost, and its state is the
    /// one every honest node had at that height.
    mutating func checkRecovered(_ index: Int, _ height: UInt64, _ root: SHA256Digest) {
        guard nodes[index].byzantine == nil else { return }
        if height < nodes[index].executedHeight {
            violation(safety: "n\(index) restarted at height \(height), below the \(nodes[index].executedHeight) it had executed: final blocks lost")
        }
        if height > 0, let expected = roots[height], expected != root {
            violation(safety: "n\(index) restarted at height \(height) with a state root other than the one executed there")
        }
    }

    /// Node `index`'s core stopped itself. An injected storage fault does that by design:
    /// the node is down and restarts from its storage. Anything else (a diverged state) on
    /// an honest node is a violation.
    private mutating func stopped(_ index: Int, _ reason: String) {
        nodes[index].core = nil
        nodes[index].storage?.crash()
        nodes[index].restartAt = tick + 20 + Int(random.next() % 100)
        if reason.hasPrefix("simulated") {
            report.storageStops += 1
            note("n\(index) stopped: \(reason)")
        } else if nodes[index].byzantine == nil {
            violation(safety: "n\(index) stopped: \(reason)")
        }
    }
}
