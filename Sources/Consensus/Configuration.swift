import CalissonCrypto
import Wire

/// The replica's parameters. Every bound is a named field; `validate()` checks the
/// relations between them.
public struct ReplicaConfiguration: Sendable {
    public var chainId: String
    /// The genesis validator set (later sets come from execution: `EpochSchedule`).
    public var validators: ValidatorSet
    /// A checkpoint every K executed blocks (K = checkpointInterval).
    public var checkpointInterval: UInt64 = 8
    /// Sequence numbers in flight above the last stable checkpoint (the high watermark).
    public var window: UInt64 = 32
    /// Ticks without progress before a view change; doubles with each failed attempt.
    public var viewChangeTimeoutTicks: UInt64 = 40
    public var viewChangeTimeoutTicksMax: UInt64 = 40 * 8
    /// The primary cuts a block at this many pending commands, or ...
    public var batchCommandsMax: Int = 400
    /// ... after this many ticks with a non-empty mempool,
    public var batchTicks: UInt64 = 1
    /// ... while fewer than this many of its proposals in this view are not committed yet.
    /// Full blocks are pipelined up to the window; a partial block waits for the one before
    /// to commit, so that at light load commands gather into fewer blocks (a block costs
    /// three signed rounds and a durable write on every validator whatever its size).
    public var partialBlocksInFlightMax: Int = 1
    /// With nothing to order for this many ticks, the primary completes the checkpoint
    /// interval with null blocks (no commands), so that the state after the last commands
    /// is certified and reaches light clients and gateways, which read certified state only;
    /// without it, the heights after the last checkpoint wait for the next transactions.
    /// A ledger that has cut no block yet is completed to its first checkpoint likewise.
    /// 0: never (the primary cuts blocks only for commands).
    public var checkpointFillTicks: UInt64 = 0
    /// Ticks between two state-transfer requests while behind.
    public var stateTransferRetryTicks: UInt64 = 10
    /// Blocks per state-transfer response.
    public var stateTransferBlocksMax: Int = 64
    /// Ticks between resends of this replica's checkpoint votes while the stable
    /// checkpoint lags behind what it executed (votes lost in the network).
    public var checkpointResendTicks: UInt64 = 20
    /// Checkpoint votes kept per validator above the low watermark.
    public var checkpointVotesPerValidatorMax: Int = 4
    /// View changes are kept for at most this many views above the current one.
    public var viewChangeViewsAheadMax: UInt64 = 64
    /// This replica's own past view changes kept for resending.
    public var ownViewChangesKept = 8
    /// A deterministic, stateless check of a proposed block (well-formed commands).
    /// Execution decides each command's effect; this only refuses garbage proposals.
    public var validateBlock: @Sendable (Block) -> Bool = { _ in true }

    public init(chainId: String, validators: ValidatorSet) {
        self.chainId = chainId
        self.validators = validators
    }

    /// The schedule of a chain that has not changed its validators yet.
    public var genesisSchedule: EpochSchedule {
        EpochSchedule(genesis: validators, checkpointInterval: checkpointInterval, window: window)
    }

    public enum Invalid: Error, Equatable, Sendable {
        case chainId
        case windowTooSmall(window: UInt64, checkpointInterval: UInt64)
        case windowNotMultipleOfCheckpointInterval(window: UInt64, checkpointInterval: UInt64)
        case zero(String)
    }

    public func validate() throws(Invalid) {
        guard SigningDomain(chainId: chainId, purpose: .commit) != nil else { throw .chainId }
        guard checkpointInterval > 0 else { throw .zero("checkpointInterval") }
        // Proposals continue while the next checkpoint stabilises only if the window
        // spans at least two checkpoint intervals.
        guard window >= 2 * checkpointInterval else {
            throw .windowTooSmall(window: window, checkpointInterval: checkpointInterval)
        }
        // Epoch boundaries (checkpoint + window) must be checkpoints.
        guard window % checkpointInterval == 0 else {
            throw .windowNotMultipleOfCheckpointInterval(window: window, checkpointInterval: checkpointInterval)
        }
        guard viewChangeTimeoutTicks > 0, viewChangeTimeoutTicksMax >= viewChangeTimeoutTicks else {
            throw .zero("viewChangeTimeoutTicks")
        }
        guard batchCommandsMax > 0, partialBlocksInFlightMax > 0, stateTransferBlocksMax > 0, stateTransferRetryTicks > 0, checkpointResendTicks > 0,
            checkpointVotesPerValidatorMax > 0
        else { throw .zero("batch or state transfer limit") }
    }
}

/// What drives a replica. Messages arrive with every signature they carry already
/// verified by the shell (`Message.signatureChecks`).
public enum Input: Sendable {
    case message(Message, from: ValidatorID)
    /// Time passes; `pendingCommands` is the mempool's size (it arms the view-change
    /// timer on backups and the batching timer on the primary).
    case tick(pendingCommands: Int)
    /// The commands for the block the replica asked for with `.requestPayload`.
    case payload(seq: UInt64, commands: [[UInt8]])
    /// The application executed block `seq` (handed out with `.execute`): its state root,
    /// and the validator set the block installed, if it changed it (governance). The new
    /// set takes effect at the epoch boundary `EpochSchedule.boundary(executedAt: seq)`.
    /// The application applies the same change to its own `EpochSchedule` in the same
    /// durable write as the block's state, and hands that schedule back on restart.
    case executed(seq: UInt64, stateRoot: SHA256Digest, validators: ValidatorSet? = nil)
    /// A link to this validator came up (again): what it may have missed while it was down
    /// is sent to it again (`Replica.relink`).
    case linked(ValidatorID)
}

/// What the shell must do, in order. A `.persist` must be durable before any later
/// action of the same step is performed (persist before send).
public enum Action: Sendable, Equatable {
    case persist(SafetyRecord)
    case send(Message, to: ValidatorID)
    case broadcast(Message)
    /// Cut a block of at most `commandsMax` commands from the mempool for `seq`. The shell
    /// must always answer with `.payload(seq:commands:)`, empty if need be: until it does,
    /// this replica proposes nothing more.
    case requestPayload(seq: UInt64, commandsMax: Int)
    /// Execute this final block (always the next height, in order).
    case execute(CertifiedBlock)
    /// Send `peer` the committed blocks from `fromSeq` on, at most `blocksMax`.
    case serveState(fromSeq: UInt64, to: ValidatorID, blocksMax: Int)
    case evidence(Equivocation)
    case rejected(Rejection, from: ValidatorID)
    /// Views are numbered within an epoch: entering an epoch enters its view 0.
    case enteredView(UInt64)
    /// The stable checkpoint closing the previous epoch was reached: `epoch.validators`
    /// order from `epoch.firstSeq` on. The node updates its peer mesh.
    case enteredEpoch(Epoch)
    /// Our state root at a checkpoint differs from the one a quorum certified: this
    /// replica's application diverged; the node must stop and be repaired.
    case stateDiverged(seq: UInt64, ours: SHA256Digest, certified: SHA256Digest)
}

/// Why a message from a peer was refused. Logged and counted; never fatal.
public enum Rejection: Error, Equatable, Sendable {
    case notAValidator
    case staleView(UInt64, current: UInt64)
    case futureView(UInt64, current: UInt64)
    case notPrimary(view: UInt64)
    case outsideWindow(seq: UInt64, low: UInt64, high: UInt64)
    case conflictingProposal(seq: UInt64)
    case invalidBlock(seq: UInt64)
    case malformedCertificate(String)
    case newViewMismatch(String)
    /// About a height whose validator set this replica cannot know yet (it has not
    /// executed far enough): kept as a hint to fetch blocks, never judged.
    case beyondHorizon(seq: UInt64, horizon: UInt64)
    /// A view change or NewView of an epoch that already ended here.
    case staleEpoch(firstSeq: UInt64, current: UInt64)
}

/// Two signed, conflicting messages from one validator: kept as evidence for governance
/// (the Ledger can suspend the partner) once the shell has checked both signatures
/// (`signatureChecks`: one of them may be a vote the replica took unchecked).
public struct Equivocation: Hashable, Sendable {
    public let first: Message
    public let second: Message

    public init(first: Message, second: Message) {
        self.first = first
        self.second = second
    }

    /// Every signature the two messages carry.
    public func signatureChecks(chainId: String) -> [SignatureCheck] {
        first.signatureChecks(chainId: chainId) + second.signatureChecks(chainId: chainId)
    }
}
