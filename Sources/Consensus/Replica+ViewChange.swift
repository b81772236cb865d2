import CalissonCrypto
import Wire

extension Replica {
    /// Leaves the current view for `newView`: stops taking part in older views (persisted
    /// first), and tells everyone what this replica prepared since its stable checkpoint.
    mutating func startViewChange(to newView: UInt64) {
        precondition(newView > view, "view changes only move forward")
        view = newView
        isViewChanging = true
        ticksWithoutProgress = 0
        viewChangeAttempts += 1
        payloadRequested = nil
        currentNewView = nil
        persist(.view(newView, changing: true))
        clearViewState()
        viewChanges = viewChanges.filter { $0.key >= newView }
        sendOwnViewChange()
        maybeSendNewView()
    }

    /// While changing view: once a quorum has asked for the target view, its primary had
    /// its chance, and on timeout this replica moves to the next view. Without that quorum
    /// it must not simply move on (replicas racing ahead one by one never meet in a view):
    /// it joins a later view someone asked for, or re-sends its ViewChange, which the
    /// network may have lost.
    mutating func viewChangeTick() {
        ticksWithoutProgress += 1
        guard ticksWithoutProgress >= viewChangeTimeout() else { return }
        if (viewChanges[view]?.count ?? 0) >= validators.quorum {
            startViewChange(to: view + 1)
        } else if let higher = viewChanges.keys.filter({ $0 > view }).min() {
            // No quorum came in a whole timeout, but some validator asks for a later view:
            // meet it there. (A replica that crashed lost its signed view changes for the
            // views it passed, so the ones behind it may never complete theirs.) Safety
            // does not depend on which view replicas meet in; a Byzantine validator can
            // only raise view numbers this way, and only while this replica is stuck.
            startViewChange(to: higher)
        } else {
            ticksWithoutProgress = 0
            sendOwnViewChange()
        }
    }

    /// Broadcasts this replica's ViewChange for the current target view, signing it if
    /// needed (after a restart the signed message itself was not kept). A learner has
    /// no say in view changes: it only follows them.
    private mutating func sendOwnViewChange() {
        guard isMember else { return }
        let change: Signed<ViewChange>
        if let own = ownViewChanges[view] {
            change = own
        } else {
            let prepared = slots.keys.sorted().compactMap { slots[$0]?.prepared }.filter { $0.seq > lowWatermark }
            change = Signed(ViewChange(newView: view, stable: stable, prepared: prepared), chainId: chainId, signer: signer)
            ownViewChanges[view] = change
            if ownViewChanges.count > configuration.ownViewChangesKept, let oldest = ownViewChanges.keys.min() {
                ownViewChanges[oldest] = nil
            }
        }
        viewChanges[view, default: [:]][id] = change
        actions.append(.broadcast(.viewChange(change)))
    }

    /// Per-view votes mean nothing in another view; prepared certificates, commits and
    /// final blocks are kept.
    private mutating func clearViewState() {
        for seq in Array(slots.keys) {
            slots[seq]?.prePrepare = nil
            slots[seq]?.prepares = [:]
            slots[seq]?.uncheckedPrepares = [:]
            slots[seq]?.commitSent = false
        }
    }

    mutating func receiveViewChange(_ m: Signed<ViewChange>, from: ValidatorID) {
        guard let changeEpoch = epoch(of: m.body) else {
            // A hint worth a state request, from a validator only (as a commit's), and
            // whatever the height it names: its checkpoint is not checked yet.
            if let stable = m.body.stable, schedule.isValidatorOfSomeEpoch(m.signer) { noteAhead(stable.seq, from: m.signer) }
            return reject(.beyondHorizon(seq: (m.body.stable?.seq ?? 0).saturatingAdding(1), horizon: horizon), from: from)
        }
        guard changeEpoch.validators.contains(m.signer) else { return reject(.notAValidator, from: from) }
        if changeEpoch.firstSeq < epoch.firstSeq {
            return reject(.staleEpoch(firstSeq: changeEpoch.firstSeq, current: epoch.firstSeq), from: from)
        }
        if changeEpoch.firstSeq > epoch.firstSeq {
            // The sender's stable checkpoint closed our epoch: if it holds, join the next.
            if let problem = viewChangeProblem(m, in: changeEpoch) { return reject(.malformedCertificate(problem), from: from) }
            if let stable = m.body.stable { adoptStable(stable) }
            guard epoch.firstSeq == changeEpoch.firstSeq else { return }
        }
        let target = m.body.newView
        if target < view || (target == view && !isViewChanging) {
            // The sender is behind: give it what it lacks to reach a quorum or the view.
            if let last = lastHelped[m.signer], tickCount < last + configuration.viewChangeTimeoutTicks { return }
            lastHelped[m.signer] = tickCount
            if target == view, let newView = currentNewView {
                actions.append(.send(.newView(newView), to: m.signer))
            } else if let own = ownViewChanges[target] {
                actions.append(.send(.viewChange(own), to: m.signer))
            }
            return
        }
        guard target <= view + configuration.viewChangeViewsAheadMax else { return }
        if let problem = viewChangeProblem(m, in: changeEpoch) { return reject(.malformedCertificate(problem), from: from) }
        guard viewChanges[target]?[m.signer] == nil else { return }
        viewChanges[target, default: [:]][m.signer] = m

        // Join rule: f + 1 validators asking for later views include an honest one, so a
        // view change is under way; join the smallest of their views.
        var highestBySigner: [ValidatorID: UInt64] = [:]
        for (target, changes) in viewChanges where target > view {
            for signer in changes.keys { highestBySigner[signer] = max(highestBySigner[signer] ?? 0, target) }
        }
        if highestBySigner.count >= validators.weakQuorum, let smallest = highestBySigner.values.min() {
            startViewChange(to: smallest)
            return
        }
        maybeSendNewView()
    }

    /// The new primary, with a quorum of view changes for its view, computes and sends
    /// the NewView.
    private mutating func maybeSendNewView() {
        guard isViewChanging, validators.primary(of: view) == id, currentNewView == nil else { return }
        let changes = (viewChanges[view] ?? [:]).values.sorted { $0.signer < $1.signer }
        guard changes.count >= validators.quorum else { return }
        let chosen = Array(changes.prefix(validators.quorum))
        let plan = Self.newViewPlan(chosen, view: view)
        let prePrepares = plan.blocks.map { Signed(PrePrepare(view: view, block: $0), chainId: chainId, signer: signer) }
        // After a restart this primary may already have proposed in this view: if the plan
        // differs from what it signed, stay silent and let the timer move to the next view.
        let conflicts = prePrepares.contains { prePrepare in
            safety.vote(.prePrepare, view: view, seq: prePrepare.body.seq).map { $0 != prePrepare.body.block.digest } ?? false
        }
        guard !conflicts else { return }
        let newView = Signed(NewView(view: view, viewChanges: chosen, prePrepares: prePrepares), chainId: chainId, signer: signer)
        for prePrepare in prePrepares where safety.vote(.prePrepare, view: view, seq: prePrepare.body.seq) == nil {
            persist(.proposed(prePrepare))
        }
        currentNewView = newView
        actions.append(.broadcast(.newView(newView)))
        enter(view: view, stable: plan.stable, prePrepares: prePrepares)
    }

    /// What a NewView must re-propose, from a quorum of view changes: every height above
    /// the highest stable checkpoint up to the highest prepared one gets the block of the
    /// highest-view prepared certificate for it, or the null block. A block that may have
    /// committed was prepared by a quorum, which overlaps this quorum of view changes in
    /// at least one honest replica, so it is always among the certificates.
    static func newViewPlan(_ changes: [Signed<ViewChange>], view: UInt64) -> (stable: CheckpointCertificate?, blocks: [Block]) {
        let stable = highestStable(changes)
        let low = stable?.seq ?? 0
        var best: [UInt64: PreparedCertificate] = [:]
        for change in changes {
            for certificate in change.body.prepared where certificate.seq > low {
                if let current = best[certificate.seq], current.view >= certificate.view { continue }
                best[certificate.seq] = certificate
            }
        }
        guard let high = best.keys.max() else { return (stable, []) }
        let blocks = (low + 1...high).map { seq in best[seq]?.block ?? Block(seq: seq, commands: []) }
        return (stable, blocks)
    }

    static func highestStable(_ changes: [Signed<ViewChange>]) -> CheckpointCertificate? {
        changes.compactMap(\.body.stable).max { $0.seq < $1.seq }
    }

    mutating func receiveNewView(_ m: Signed<NewView>, from: ValidatorID) {
        let body = m.body
        // The NewView's epoch is that of its view changes, which must all share it.
        // Nothing of it checked yet: the highest stable checkpoint may name any height.
        let planStable = Self.highestStable(body.viewChanges)?.seq ?? 0
        guard planStable < horizon else {
            if schedule.isValidatorOfSomeEpoch(m.signer) { noteAhead(planStable, from: m.signer) }
            return reject(.beyondHorizon(seq: planStable.saturatingAdding(1), horizon: horizon), from: from)
        }
        let newViewEpoch = schedule.epoch(at: planStable + 1)
        guard newViewEpoch.firstSeq >= epoch.firstSeq else {
            return reject(.staleEpoch(firstSeq: newViewEpoch.firstSeq, current: epoch.firstSeq), from: from)
        }
        let sameEpoch = newViewEpoch.firstSeq == epoch.firstSeq
        guard !sameEpoch || body.view > view || (body.view == view && isViewChanging) else {
            return reject(.staleView(body.view, current: view), from: from)
        }
        let validators = newViewEpoch.validators
        guard validators.contains(m.signer) else { return reject(.notAValidator, from: from) }
        guard m.signer == validators.primary(of: body.view) else { return reject(.notPrimary(view: body.view), from: from) }
        guard body.viewChanges.allSatisfy({ $0.body.newView == body.view }) else {
            return reject(.newViewMismatch("a view change for another view"), from: from)
        }
        guard body.viewChanges.allSatisfy({ epoch(of: $0.body)?.firstSeq == newViewEpoch.firstSeq }) else {
            return reject(.newViewMismatch("a view change from another epoch"), from: from)
        }
        if let problem = validators.quorumProblem(body.viewChanges, "new view") { return reject(.newViewMismatch(problem), from: from) }
        for change in body.viewChanges {
            if let problem = viewChangeProblem(change, in: newViewEpoch) { return reject(.malformedCertificate(problem), from: from) }
        }
        // Recompute what must be proposed and accept nothing else: a NewView that drops or
        // alters a prepared block is refused. (Only now are the heights known to be bounded.)
        let plan = Self.newViewPlan(body.viewChanges, view: body.view)
        guard plan.blocks.map(\.digest) == body.prePrepares.map(\.body.block.digest),
            body.prePrepares.allSatisfy({ $0.body.view == body.view && $0.signer == m.signer })
        else { return reject(.newViewMismatch("proposals differ from the view changes' prepared blocks"), from: from) }

        if !sameEpoch, let stable = plan.stable {
            // Its stable checkpoint closes our epoch: enter the next (view 0), then the view.
            adoptStable(stable)
            guard epoch.firstSeq == newViewEpoch.firstSeq, body.view > view else { return }
        }
        if body.view > view {
            view = body.view
            persist(.view(body.view, changing: true))
            clearViewState()
        }
        currentNewView = m
        enter(view: body.view, stable: plan.stable, prePrepares: body.prePrepares)
    }

    /// Starts normal operation in `view` with the NewView's proposals.
    private mutating func enter(view: UInt64, stable: CheckpointCertificate?, prePrepares: [Signed<PrePrepare>]) {
        self.view = view
        isViewChanging = false
        ticksWithoutProgress = 0
        // The back-off is for view changes that fail to complete; this one completed.
        viewChangeAttempts = 0
        persist(.view(view, changing: false))
        actions.append(.enteredView(view))
        if let stable, stable.seq > lowWatermark { adoptStable(stable) }
        for prePrepare in prePrepares where prePrepare.body.seq > lowWatermark && prePrepare.body.seq <= highWatermark {
            accept(prePrepare)
        }
        let highest = prePrepares.map(\.body.seq).max() ?? 0
        nextProposalSeq = max(lowWatermark, highest) + 1
        viewChanges = viewChanges.filter { $0.key > view }
    }
}
