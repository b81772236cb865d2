// The node database: blocks, results and state written atomically and read back, the
// recorded state root equal to the root recomputed from the stored state, reopening,
// read-only access while a writer runs, damaged and foreign files refused with the file
// named, schema versions, pruning, online backup, and the crash test: a writer killed
// with SIGKILL at random moments loses nothing it reported durable.
import CalissonCrypto
import CalissonTestKit
import Fixtures
import Foundation
@testable import Ledger
import Node
@testable import Storage
import Synchronization
import Testing
import Wire

func temporaryFile(_ name: String) -> String {
    Scratch.file(name)
}

/// The root of the tree holding exactly these values, computed from scratch.
func recomputedRoot(_ store: NodeStore) throws -> SHA256Digest {
    var memory = MemoryStateStore()
    var values: [(key: StateKey, value: [UInt8]?)] = []
    try store.forEachValue { values.append(($0, $1)) }
    let tree = StateTree.update(root: .zero, changes: values.map { ($0.key, $0.value.map(StateTree.valueHash)) }, nodes: memory)
    memory.commit(StateBatch(values: values, tree: tree))
    return memory.root
}

/// The ledger's meta record at checkpoint `height` is proven from `state` against `root`,
/// as a light client's proof would be.
func expectMetaProven(_ state: StoredState, atCheckpoint height: UInt64, root: SHA256Digest) throws {
    let proof = StateTree.proof(for: StateKeys.meta, root: root, nodes: state)
    let leaf = try #require(proof.terminal)
    let value = try #require(try state.values(of: StateKeys.meta, atCheckpoint: height).first { StateTree.valueHash($0) == leaf.valueHash })
    #expect(throws: Never.self) { try proof.verifyInclusion(key: StateKeys.meta, value: value, root: root) }
    #expect(try LedgerMeta(wireBytes: value).height == height)
}

struct Chain {
    static let chainId = "calisson-storage"
    let issuer = Ed25519PrivateKey(seed: SHA256.hash("storage issuer").bytes)!

    var genesis: Genesis {
        var file = Fixture.solo(chainId: Self.chainId, key: issuer.publicKey)
        file.parameters.epochLength = 5
        file.programmes[0].rewardPerUnit = 3
        file.programmes[0].expiryEpochs = 1
        return Fixture.validated(file)
    }

    func commands(height: UInt64, count: Int) -> [[UInt8]] {
        (0..<count).map { index in
            Transaction.attribution(chainId: Self.chainId, by: "metropole", nonce: height * 1_000 + UInt64(index), expiry: height + 3,
                                    to: Ed25519PublicKey(SHA256.hash("citizen \(index)")), units: 2, evidence: SHA256.hash("\(height)/\(index)"))
                .signed(with: issuer).wireBytes
        }
    }

    /// Executes and persists blocks up to `height`.
    func run(_ ledger: inout Ledger<StoredState>, to height: UInt64) throws {
        while ledger.height < height {
            let next = ledger.height + 1
            let commands = commands(height: next, count: 20)
            let outcome = ledger.execute(commands)
            let block = BlockRecord(
                height: next, digest: SHA256.hash(Array("block \(next)".utf8)), body: commands.flatMap { $0 }, certificate: Array("cert \(next)".utf8),
                stateRoot: outcome.recordedStateRoot,
                transactions: commands.enumerated().map {
                    TransactionRecord(id: SHA256.hash($0.element), result: [outcome.results[$0.offset] == .applied ? 1 : 0],
                                      accounts: [SHA256.hash("citizen \($0.offset)")])
                })
            try ledger.store.persist(block)
        }
    }
}

@Suite(.onOwnThreads) struct StorageTests {
    @Test func blocksAndStateSurviveReopeningAndTheRootMatchesTheStoredState() throws {
        let file = temporaryFile("node.db")
        let chain = Chain()
        var reference = try Ledger.create(chain.genesis, in: MemoryStateStore())
        do {
            let state = StoredState(store: try NodeStore(file: file, create: true))
            var ledger = try Ledger.create(chain.genesis, in: state)
            try state.persistGenesis(extras: ["schedule": [1, 2, 3]])
            try chain.run(&ledger, to: 12)  // crosses two epoch closes
            for height in 1...UInt64(12) { _ = reference.execute(chain.commands(height: height, count: 20)) }
            #expect(ledger.stateRoot == reference.stateRoot)
        }
        let store = try NodeStore(file: file)
        #expect(store.height == 12)
        #expect(store.stateRoot == reference.stateRoot)
        #expect(try recomputedRoot(store) == store.stateRoot)
        #expect(try store.extra("schedule") == [1, 2, 3])
        let block = try #require(try store.block(at: 7))
        #expect(block.certificate == Array("cert 7".utf8) && block.transactions.count == 20)
        let located = try #require(try store.transaction(block.transactions[3].id))
        #expect(located.height == 7 && located.position == 3 && located.result == [1])
        #expect(try store.transactions(of: SHA256.hash("citizen 3"), limit: 5).map(\.height) == [12, 11, 10, 9, 8])
        // The ledger resumes from the store.
        var resumed = try Ledger(chainId: Chain.chainId, store: StoredState(store: store))
        try chain.run(&resumed, to: 13)
        _ = reference.execute(chain.commands(height: 13, count: 20))
        #expect(resumed.stateRoot == reference.stateRoot)
    }

    /// With a state interval (the node's: its checkpoint interval), the blocks are written
    /// one by one and the state with those at its multiples, read from memory in between,
    /// and the tree updated at those multiples only, with every value written since:
    /// there the root is the one updating it at every block gives; in between it stays
    /// the last multiple's, and the blocks record none. Reopened, the state is at the last
    /// multiple and the blocks after it are executed again.
    @Test func theStateIsWrittenAtItsIntervalAndTheBlocksAfterAreExecutedAgain() throws {
        let file = temporaryFile("interval.db")
        let chain = Chain()
        var reference = try Ledger.create(chain.genesis, in: MemoryStateStore())
        var referenceRoots = [reference.stateRoot]  // by height, the root at every block
        func advanceReference(to height: UInt64) {
            while reference.height < height {
                _ = reference.execute(chain.commands(height: reference.height + 1, count: 20))
                referenceRoots.append(reference.stateRoot)
            }
        }
        do {
            let state = StoredState(store: try NodeStore(file: file, create: true), stateInterval: 4)
            var ledger = try Ledger.create(chain.genesis, in: state)
            try state.persistGenesis()
            for height in UInt64(1)...10 {
                try chain.run(&ledger, to: height)
                advanceReference(to: height)
                let rooted = height / 4 * 4
                #expect(ledger.rootHeight == rooted && ledger.stateRoot == referenceRoots[Int(rooted)], "height \(height)")
                #expect(try state.store.block(at: height)?.stateRoot == (height == rooted ? referenceRoots[Int(height)] : .zero))
            }
            #expect(state.store.height == 10 && state.store.stateHeight == 8 && state.stateHeight == 10)
            // Read through the fold, as at every block.
            let key = StateKeys.meta
            #expect(ledger.store.value(key) == reference.store.value(key))
            // An uncertified read is answered at the current height (10), its root
            // computed for it: the one the reference computed at every block.
            let record = try state.currentRecord(key)
            #expect(record.height == 10 && record.root == referenceRoots[10] && ledger.stateRoot == referenceRoots[8])
            #expect(try LedgerMeta(wireBytes: try #require(record.value)).height == 10)
            #expect(throws: Never.self) { try record.proof.verifyInclusion(key: key, value: try #require(record.value), root: record.root) }
            let absent = StateKeys.proposal(999)
            let none = try state.currentRecord(absent)
            #expect(none.value == nil && none.root == record.root)
            #expect(throws: Never.self) { try none.proof.verifyAbsence(key: absent, root: none.root) }
        }
        let store = try NodeStore(file: file)
        #expect(store.height == 10 && store.stateHeight == 8)
        #expect(try store.block(at: 8)?.stateRoot == store.stateRoot)
        #expect(try recomputedRoot(store) == store.stateRoot)
        // Bodies above the stored state are kept whatever retention asks: they are executed again.
        try store.pruneBodies(below: 11)
        #expect(store.bodiesKeptFrom == 9)

        let state = StoredState(store: store, stateInterval: 4)
        var first = try Ledger(chainId: Chain.chainId, store: state)
        #expect(first.height == 8 && first.rootHeight == 8)
        _ = first.execute(chain.commands(height: 9, count: 20))
        state.discard()
        #expect(throws: StorageError.self) { try state.replayed(9) }  // nothing committed
        // Executed again: the state at 10 as before the restart, its root still 8's.
        var resumed = try Ledger(chainId: Chain.chainId, store: state)
        for height in UInt64(9)...10 {
            _ = resumed.execute(chain.commands(height: height, count: 20))
            try state.replayed(height)
        }
        #expect(resumed.stateRoot == referenceRoots[8] && state.stateHeight == 10 && store.stateHeight == 8)
        #expect(resumed.store.value(StateKeys.meta) == reference.store.value(StateKeys.meta))
        // The next multiple updates the tree with the writes of 9 to 12 and writes their fold.
        try chain.run(&resumed, to: 12)
        advanceReference(to: 12)
        #expect(resumed.rootHeight == 12 && resumed.stateRoot == reference.stateRoot)
        #expect(store.height == 12 && store.stateHeight == 12 && store.stateRoot == reference.stateRoot)
        #expect(try store.block(at: 12)?.stateRoot == reference.stateRoot)
        #expect(try recomputedRoot(store) == reference.stateRoot)
    }

    /// An uncertified read is answered at the current height, whatever the ledger's root:
    /// its root computed once per height (the reads that follow at that height share it),
    /// from the tree computed for the last read and the keys written since, or the
    /// ledger's where the block updated the tree (blocks of 20 transactions: below
    /// 21, every block does; below 0, only those at the multiples of 4).
    @Test(arguments: [0, 21]) func anUncertifiedReadIsAnsweredAtTheCurrentHeight(below: Int) throws {
        let chain = Chain()
        var reference = try Ledger.create(chain.genesis, in: MemoryStateStore())
        let state = StoredState(store: try NodeStore(file: temporaryFile("current.db"), create: true), stateInterval: 4, treeEveryBlockBelow: below)
        var ledger = try Ledger.create(chain.genesis, in: state)
        try state.persistGenesis()
        let keys = [StateKeys.meta, StateKeys.account(Ed25519PublicKey(SHA256.hash("citizen 3"))), StateKeys.proposal(999)]
        for height in UInt64(1)...13 {
            try chain.run(&ledger, to: height)
            _ = reference.execute(chain.commands(height: height, count: 20))
            // No read at 2, 6 and 10: the next read's tree takes two blocks' keys.
            for key in keys where height % 4 != 2 {
                let record = try state.currentRecord(key)
                #expect(record.height == height && record.root == reference.stateRoot && record.value == reference.store.value(key), "height \(height)")
                if let value = record.value {
                    #expect(throws: Never.self) { try record.proof.verifyInclusion(key: key, value: value, root: record.root) }
                } else {
                    #expect(throws: Never.self) { try record.proof.verifyAbsence(key: key, root: record.root) }
                }
            }
            #expect(ledger.rootHeight == (below > 20 ? height : height / 4 * 4))
            #expect(try state.store.block(at: height)?.stateRoot == (below > 20 || height % 4 == 0 ? reference.stateRoot : .zero))
        }
        #expect(state.store.stateHeight == 12)
    }

    /// Blocks that update the tree (here all: 20 transactions, under 21) record their
    /// roots; executed again after a restart with other transactions, one gives another
    /// root: refused, naming the block and both roots.
    @Test func aBlockExecutedAgainToAnotherRecordedRootIsRefused() throws {
        let file = temporaryFile("replay-root.db")
        let chain = Chain()
        do {
            let state = StoredState(store: try NodeStore(file: file, create: true), stateInterval: 4, treeEveryBlockBelow: 21)
            var ledger = try Ledger.create(chain.genesis, in: state)
            try state.persistGenesis()
            try chain.run(&ledger, to: 10)
        }
        let store = try NodeStore(file: file)
        #expect(try store.block(at: 9)?.stateRoot != .zero && store.stateHeight == 8)
        let state = StoredState(store: store, stateInterval: 4, treeEveryBlockBelow: 21)
        var wrong = try Ledger(chainId: Chain.chainId, store: state)
        _ = wrong.execute(chain.commands(height: 9, count: 19))
        #expect { try state.replayed(9) } throws: { "\($0)".contains("block 9 executed again gives the state root") }
        state.discard()
        var resumed = try Ledger(chainId: Chain.chainId, store: state)
        for height in UInt64(9)...10 {
            _ = resumed.execute(chain.commands(height: height, count: 20))
            try state.replayed(height)
        }
        let recorded = try store.block(at: 10)?.stateRoot
        #expect(resumed.rootHeight == 10 && resumed.stateRoot == recorded)
    }

    /// A store written before roots were computed at checkpoints only recorded a root at
    /// every block; one whose state is at a height between two multiples (written at every
    /// block then) resumes there: its next root, at the next multiple, covers every write
    /// since.
    @Test func aStateStoredBetweenTwoMultiplesIsRootedAtTheNext() throws {
        let file = temporaryFile("legacy-interval.db")
        let chain = Chain()
        var reference = try Ledger.create(chain.genesis, in: MemoryStateStore())
        do {
            let state = StoredState(store: try NodeStore(file: file, create: true))  // every block
            var ledger = try Ledger.create(chain.genesis, in: state)
            try state.persistGenesis()
            try chain.run(&ledger, to: 6)
        }
        let store = try NodeStore(file: file)
        #expect(store.stateHeight == 6 && store.stateRoot != .zero)
        let state = StoredState(store: store, stateInterval: 4)
        var ledger = try Ledger(chainId: Chain.chainId, store: state)
        #expect(ledger.rootHeight == 6 && ledger.stateRoot == store.stateRoot)
        try chain.run(&ledger, to: 7)
        #expect(ledger.rootHeight == 6)
        try chain.run(&ledger, to: 8)
        while reference.height < 8 { _ = reference.execute(chain.commands(height: reference.height + 1, count: 20)) }
        #expect(ledger.rootHeight == 8 && ledger.stateRoot == reference.stateRoot && store.stateRoot == reference.stateRoot)
        #expect(try recomputedRoot(store) == reference.stateRoot)
    }

    /// The state written at every third checkpoint (4 blocks each: 12, 24…) once it is
    /// served: a light client's proof at the checkpoints in between (4, 8), and at 12 before
    /// it is served, comes from the fold held at their height; rebuilt by the blocks executed
    /// again after a restart; dropped once a later checkpoint is served, after which the node
    /// says it no longer holds them. Checkpoint 12 served, its state is written and the
    /// blocks after it are folded from it.
    @Test func aCheckpointBetweenTwoWritesIsProvenFromTheFoldHeldAtIt() throws {
        let file = temporaryFile("held.db")
        let chain = Chain()
        var reference = try Ledger.create(chain.genesis, in: MemoryStateStore())
        var referenceRoots = [reference.stateRoot]
        var referenceValues: [[StateKey: [UInt8]]] = [[:]]  // by height, the keys below
        let keys = [StateKeys.meta, StateKeys.account(Ed25519PublicKey(SHA256.hash("citizen 3"))), StateKeys.proposal(999)]
        func advanceReference(to height: UInt64) {
            while reference.height < height {
                _ = reference.execute(chain.commands(height: reference.height + 1, count: 20))
                referenceRoots.append(reference.stateRoot)
                referenceValues.append(Dictionary(uniqueKeysWithValues: keys.compactMap { key in reference.store.value(key).map { (key, $0) } }))
            }
        }
        /// Checks a proof at `checkpoint` as a light client would, for every key.
        func expectProven(_ state: StoredState, at checkpoint: UInt64, _ comment: Comment) throws {
            let root = referenceRoots[Int(checkpoint)]
            #expect(try state.store.block(at: checkpoint)?.stateRoot == root, comment)
            #expect(state.holds(checkpoint: checkpoint, root: root), comment)
            #expect(try state.encodedPage(root).map { try TreePage(decoding: $0).root } == root, comment)
            for key in keys {
                let proof = StateTree.proof(for: key, root: root, nodes: state)
                if let expected = referenceValues[Int(checkpoint)][key] {
                    let leaf = try #require(proof.terminal, comment)
                    let value = try state.values(of: key, atCheckpoint: checkpoint).first { StateTree.valueHash($0) == leaf.valueHash }
                    #expect(value == expected, comment)
                    #expect(throws: Never.self) { try proof.verifyInclusion(key: key, value: try #require(value), root: root) }
                } else {
                    #expect(throws: Never.self) { try proof.verifyAbsence(key: key, root: root) }
                }
            }
            #expect(state.readError == nil, comment)
        }
        do {
            let state = StoredState(store: try NodeStore(file: file, create: true), stateInterval: 4, writeEvery: 3)
            var ledger = try Ledger.create(chain.genesis, in: state)
            try state.persistGenesis()
            try chain.run(&ledger, to: 10)
            advanceReference(to: 10)
            #expect(state.store.stateHeight == 0 && state.stateHeight == 10)
            try expectProven(state, at: 4, "before any write, in the same process")
            #expect(try state.serve(checkpoint: 4) == 0)  // the folds held are folded from the state at 0
            try expectProven(state, at: 8, "before any write, in the same process")
        }
        let store = try NodeStore(file: file)
        #expect(store.height == 10 && store.stateHeight == 0)
        var state = StoredState(store: store, stateInterval: 4, writeEvery: 3)
        // Nothing held before the blocks are executed again: checkpoint 8's root page was never written.
        #expect(!state.holds(checkpoint: 8, root: referenceRoots[8]))
        var ledger = try Ledger(chainId: Chain.chainId, store: state)
        for height in UInt64(1)...10 {
            _ = ledger.execute(chain.commands(height: height, count: 20))
            try state.replayed(height)
        }
        try expectProven(state, at: 8, "after the restart")
        try chain.run(&ledger, to: 14)
        advanceReference(to: 16)
        #expect(store.stateHeight == 0, "12 is not written before it is served")
        try expectProven(state, at: 8, "12 executed")
        try expectProven(state, at: 12, "executed, not served")
        #expect(try state.serve(checkpoint: 8) == 0 && store.stateHeight == 0)
        // Checkpoint 12 served: its state written, the fold held at 8 dropped with its pages.
        #expect(try state.serve(checkpoint: 12) == 12)
        #expect(store.stateHeight == 12 && store.stateRoot == referenceRoots[12])
        #expect(try recomputedRoot(store) == referenceRoots[12])
        #expect(!state.holds(checkpoint: 8, root: referenceRoots[8]))
        try expectProven(state, at: 12, "served and written")
        // The blocks after 12 are read through the fold from it.
        try chain.run(&ledger, to: 16)
        #expect(ledger.stateRoot == referenceRoots[16] && state.stateHeight == 16)
        for key in keys { #expect(ledger.store.value(key) == referenceValues[16][key]) }
        try expectProven(state, at: 16, "above the state written")
        // Reopened: the state at 12, the blocks after it executed again.
        state = StoredState(store: store, stateInterval: 4, writeEvery: 3)
        ledger = try Ledger(chainId: Chain.chainId, store: state)
        for height in UInt64(13)...16 {
            _ = ledger.execute(chain.commands(height: height, count: 20))
            try state.replayed(height)
        }
        try expectProven(state, at: 16, "after the second restart")
        #expect(!referenceValues[8].isEmpty && referenceValues[8] != referenceValues[12])
    }

    /// Each validator writes the state at its own checkpoints (its offset among every
    /// `writeEvery`-th) once served, or once a later checkpoint is (certificates may skip
    /// one): the stored state is never above the latest served checkpoint, which a restarted
    /// node can then prove. When none is served for two write intervals (no certificate
    /// comes), the state is written with the block instead, so that the fold in memory
    /// stays bounded.
    @Test func eachValidatorWritesTheStateAtItsOwnCheckpoints() throws {
        let file = temporaryFile("offset.db")
        let chain = Chain()
        var state = StoredState(store: try NodeStore(file: file, create: true), stateInterval: 4, writeEvery: 3, writeOffset: 4)
        #expect(state.writeOffset == 1)
        #expect((UInt64(0)...40).filter(state.writesState(atHeight:)) == [4, 16, 28, 40])
        var ledger = try Ledger.create(chain.genesis, in: state)
        try state.persistGenesis()
        try chain.run(&ledger, to: 10)
        #expect(state.store.stateHeight == 0)
        // 4 is skipped by the certificates: its state is written when 8 is served.
        try state.serve(checkpoint: 8)
        #expect(state.store.stateHeight == 4 && state.stateHeight == 10)
        let root8 = try #require(try state.store.block(at: 8)?.stateRoot)
        #expect(state.holds(checkpoint: 8, root: root8))
        // Reopened: 8, the latest served, is proven again once the blocks above 4 are executed.
        state = StoredState(store: state.store, stateInterval: 4, writeEvery: 3, writeOffset: 1)
        ledger = try Ledger(chainId: Chain.chainId, store: state)
        #expect(!state.holds(checkpoint: 8, root: root8))
        for height in UInt64(5)...10 {
            _ = ledger.execute(chain.commands(height: height, count: 20))
            try state.replayed(height)
        }
        #expect(state.holds(checkpoint: 8, root: root8))
        try expectMetaProven(state, atCheckpoint: 8, root: root8)
        try chain.run(&ledger, to: 17)
        try state.serve(checkpoint: 16)
        #expect(state.store.stateHeight == 16)
        #expect(try recomputedRoot(state.store) == state.store.stateRoot)
        // No checkpoint served after 16: 28 is not written (12 blocks folded), 40 is (24).
        try chain.run(&ledger, to: 39)
        #expect(state.store.stateHeight == 16)
        try chain.run(&ledger, to: 40)
        #expect(state.store.stateHeight == 40)
        #expect(try recomputedRoot(state.store) == state.store.stateRoot)
    }

    /// A state written in slices (Docs/STORAGE.md, "The state written in slices"): until its
    /// last slice, the stored state is the one before it, for the node and for a reader of
    /// the file, and the checkpoint is proven from the fold held; served, the write ends with
    /// its last slice; a store reopened in the middle of one undoes it.
    @Test func aStateWrittenInSlicesIsReadAroundUntilItEndsAndUndoneIfCutShort() throws {
        let file = temporaryFile("slices.db")
        let chain = Chain()
        var state = StoredState(store: try NodeStore(file: file, create: true), stateInterval: 4, writeEvery: 2)
        state.slicesPerWrite = 4
        state.sliceRowsMin = 1
        #expect((UInt64(1)...24).filter(state.writesState(atHeight:)) == [8, 16, 24])
        var ledger = try Ledger.create(chain.genesis, in: state)
        try state.persistGenesis()
        try chain.run(&ledger, to: 9)
        let root0 = state.store.stateRoot
        try state.advanceStateWrite()
        #expect(state.store.stateWriteUnderWay == 8 && state.store.stateHeight == 0)
        #expect(try recomputedRoot(state.store) == root0)
        let reader = try NodeStore(file: file, readOnly: true)
        #expect(reader.stateWriteUnderWay == 8 && reader.stateHeight == 0)
        #expect(try recomputedRoot(reader) == root0)
        // Served after the first slice: the second is written, the write goes on.
        try state.serve(checkpoint: 8)
        #expect(state.store.stateWriteUnderWay == 8 && state.store.stateHeight == 0)
        let root8 = try #require(try state.store.block(at: 8)?.stateRoot)
        #expect(state.holds(checkpoint: 8, root: root8))
        try expectMetaProven(state, atCheckpoint: 8, root: root8)
        // No other write while one is under way.
        #expect(throws: StorageError.self) { try state.store.writeState(StateChanges(values: [], createdPages: [], removedPages: [], root: root8), atHeight: 8) }
        try state.advanceStateWrite()
        #expect(state.store.stateHeight == 0)
        try state.advanceStateWrite()
        #expect(state.store.stateWriteUnderWay == nil && state.store.stateHeight == 8 && state.store.stateRoot == root8)
        #expect(try recomputedRoot(state.store) == root8)
        #expect(reader.stateWriteUnderWay == nil && reader.stateHeight == 8)
        #expect(try recomputedRoot(reader) == root8)
        #expect(state.holds(checkpoint: 8, root: root8))
        // Cut short: 16's write stopped after two slices of four, the store reopened.
        try chain.run(&ledger, to: 17)
        try state.advanceStateWrite()
        try state.advanceStateWrite()
        #expect(state.store.stateWriteUnderWay == 16)
        #expect(try recomputedRoot(reader) == root8)
        state.store.close()
        let reopened = try NodeStore(file: file)
        #expect(reopened.stateWriteUnderWay == nil && reopened.stateHeight == 8)
        #expect(try recomputedRoot(reopened) == root8)
        try reopened.integrityCheck()
        // The blocks above 8 executed again; 16, a fold larger than `slicedRowsMax`, not
        // sliced, but written at once when served.
        state = StoredState(store: reopened, stateInterval: 4, writeEvery: 2)
        state.slicedRowsMax = 1
        ledger = try Ledger(chainId: Chain.chainId, store: state)
        for height in UInt64(9)...17 {
            _ = ledger.execute(chain.commands(height: height, count: 20))
            try state.replayed(height)
        }
        try state.advanceStateWrite()
        #expect(state.store.stateWriteUnderWay == nil && state.store.stateHeight == 8)
        try state.serve(checkpoint: 16)
        let root16 = try #require(try state.store.block(at: 16)?.stateRoot)
        #expect(state.store.stateHeight == 16 && state.store.stateRoot == root16)
        #expect(try recomputedRoot(state.store) == root16)
        #expect(reader.stateHeight == 16)
        // Not served, 24's write in slices ends with the next two intervals' block (the bound
        // on the fold in memory), its slices first.
        state.slicesPerWrite = 4
        state.sliceRowsMin = 1
        state.slicedRowsMax = 65_536
        try chain.run(&ledger, to: 25)
        try state.advanceStateWrite()
        #expect(state.store.stateWriteUnderWay == 24)
        try chain.run(&ledger, to: 32)
        #expect(state.store.stateWriteUnderWay == nil && state.store.stateHeight == 32)
        #expect(try recomputedRoot(state.store) == state.store.stateRoot)
        // Served, 40's write in slices not finished by the next two intervals' block: 40's
        // slices are finished then, and that block (not certified) is not written with its
        // state (it was: the stored state above the latest certified checkpoint, and one
        // long commit, because the slices took longer than an interval).
        try chain.run(&ledger, to: 41)
        try state.serve(checkpoint: 40)
        #expect(state.store.stateWriteUnderWay == 40)
        try chain.run(&ledger, to: 43)
        #expect(state.store.stateWriteUnderWay == 40, "a block persisted finished a write in slices before the bound")
        try chain.run(&ledger, to: 48)
        let root40 = try #require(try state.store.block(at: 40)?.stateRoot)
        #expect(state.store.stateWriteUnderWay == nil && state.store.stateHeight == 40 && state.store.stateRoot == root40)
        #expect(try recomputedRoot(state.store) == root40)
        try state.serve(checkpoint: 48)
        while state.store.stateWriteUnderWay != nil || state.store.stateHeight < 48 { try state.advanceStateWrite() }
        let root48 = try #require(try state.store.block(at: 48)?.stateRoot)
        #expect(state.store.stateHeight == 48)
        #expect(try recomputedRoot(state.store) == root48)
    }

    /// The store's side of a write in slices: a slice's values are read around (a changed
    /// one as archived, an added one as absent, a deleted one as it was) by the writer and by
    /// a reader; its pages are new rows, the root page waits for the end; an open undoes
    /// an unfinished write; the end moves the stored state at once.
    @Test func aWriteInSlicesIsReadAroundAndUndoneAtOpen() throws {
        let file = temporaryFile("store-slices.db")
        func key(_ name: String) -> Bytes32 { SHA256.hash(name) }
        let (a, b, c, d) = (key("a"), key("b"), key("c"), key("d"))
        let (root0, root1, page) = (key("root 0"), key("root 1"), key("page"))
        var store = try NodeStore(file: file, create: true)
        try store.writeGenesis(StateChanges(values: [(a, [1]), (b, [2]), (c, [3])], createdPages: [(root0, [0])], removedPages: [], root: root0))
        try store.append(BlockRecord(height: 1, digest: .zero, body: [], certificate: [], stateRoot: root1, transactions: []), state: nil)
        let reader = try NodeStore(file: file, readOnly: true)
        func expectBefore(_ store: NodeStore, _ comment: Comment) throws {
            #expect(try store.value(a) == [1] && store.value(b) == [2] && store.value(c) == [3] && store.value(d) == nil, comment)
            var all: [Bytes32: [UInt8]] = [:]
            try store.forEachValue { all[$0] = $1 }
            #expect(all == [a: [1], b: [2], c: [3]], comment)
            #expect(store.stateHeight == 0 && store.stateRoot == root0, comment)
        }
        try store.writeStateSlice(atHeight: 1, values: [(a, [10]), (d, [4])], pages: [(page, [9])])
        try store.writeStateSlice(atHeight: 1, values: [(b, nil)], pages: [])
        #expect(store.stateWriteUnderWay == 1 && reader.stateWriteUnderWay == 1)
        try expectBefore(store, "the writer, during the write")
        try expectBefore(reader, "a reader, during the write")
        #expect(try store.treePage(page) == [9] && store.treePage(root1) == nil)
        // A key in two slices, a slice at another height: refused.
        #expect(throws: StorageError.self) { try store.writeStateSlice(atHeight: 1, values: [(a, [11])], pages: []) }
        #expect(throws: StorageError.self) { try store.writeStateSlice(atHeight: 2, values: [(c, [5])], pages: []) }
        // Reopened in the middle: undone.
        store.close()
        store = try NodeStore(file: file)
        #expect(store.stateWriteUnderWay == nil && reader.stateWriteUnderWay == nil)
        try expectBefore(store, "reopened")
        try expectBefore(reader, "a reader, after the undo")
        #expect(try store.treePage(page) == nil && store.value(d) == nil)
        try store.integrityCheck()
        // Written again and ended: the new state, at once.
        try store.writeStateSlice(atHeight: 1, values: [(a, [10]), (b, nil), (d, [4])], pages: [(page, [9])])
        #expect(throws: StorageError.self) { try store.finishStateWrite(atHeight: 1, root: root0, rootPage: [1], removedPages: []) }  // not block 1's root
        try store.finishStateWrite(atHeight: 1, root: root1, rootPage: [1], removedPages: [root0])
        for reading in [store, reader] {
            #expect(reading.stateWriteUnderWay == nil && reading.stateHeight == 1 && reading.stateRoot == root1)
            #expect(try reading.value(a) == [10] && reading.value(b) == nil && reading.value(c) == [3] && reading.value(d) == [4])
            #expect(try reading.values(of: a, after: 0) == [[1], [10]])
        }
        // A reader's value is one snapshot of its own (which the reads above would have kept
        // open, stale, had it not ended), or the caller's.
        #expect(try reader.reading { (try? reader.value(a)) ?? nil } == [10])
        #expect(try store.treePage(root1) == [1] && store.treePage(page) == [9] && store.treePage(root0) == [0])
        // A page retired and not pruned yet (root0), written again by a slice of the next
        // state: live while that write is under way, whatever a pruning does meanwhile (the
        // replaced values go with the history, as after a whole write); the write undone, it
        // is retired again, and a pruning takes it.
        try store.append(BlockRecord(height: 2, digest: .zero, body: [], certificate: [], stateRoot: key("root 2"), transactions: []), state: nil)
        try store.writeStateSlice(atHeight: 2, values: [], pages: [(root0, [0])])
        try store.pruneHistory(through: 1)
        #expect(try store.treePage(root0) == [0] && store.values(of: a, after: 0) == [[10]])
        store.close()
        store = try NodeStore(file: file)
        #expect(try store.treePage(root0) == [0] && store.stateHeight == 1 && store.stateWriteUnderWay == nil)
        try store.pruneHistory(through: 1)
        #expect(try store.treePage(root0) == nil && store.treePage(root1) == [1])
        store.close()
        reader.close()
    }

    /// A node executing far past its served checkpoint holds at most `heldMax` folds: the
    /// oldest go first; the newest, which it will serve, stay.
    @Test func theFoldsHeldAreBounded() throws {
        let chain = Chain()
        let state = StoredState(store: try NodeStore(file: temporaryFile("held-bound.db"), create: true), stateInterval: 1, writeEvery: 64)
        var ledger = try Ledger.create(chain.genesis, in: state)
        try state.persistGenesis()
        let count = UInt64(StoredState.heldMax) + 4
        try chain.run(&ledger, to: count)
        let roots = try (0...count).map { try #require(try state.store.block(at: $0)?.stateRoot ?? state.store.stateRoot) }
        for height in UInt64(1)...count {
            #expect(state.holds(checkpoint: height, root: roots[Int(height)]) == (height > count - UInt64(StoredState.heldMax)), "checkpoint \(height)")
        }
        #expect(state.holds(checkpoint: 0, root: roots[0]))  // the genesis, written
    }

    /// The filter of the state's keys never hides a key the table holds, whatever writes
    /// (whole, in slices, deletions) come while it is being built, in use, or rebuilt larger
    /// (a first capacity of 256 keys here, so it grows several times): a store with it and
    /// one without, given the same writes, read the same values and archive the same
    /// replaced ones; and once built, reads of absent keys skip the table.
    @Test func theKeyFilterNeverHidesAKeyTheTableHolds() throws {
        var random = SplitMix64(seed: 31)
        var store = try NodeStore(file: temporaryFile("key-filter.db"), create: true)
        let plain = try NodeStore(file: temporaryFile("no-key-filter.db"), create: true)
        store.storedKeys.capacityMin = 256
        var model: [Bytes32: [UInt8]] = [:]
        var used: [Bytes32] = []
        func root(_ height: UInt64) -> Bytes32 { SHA256.hash("root \(height)") }
        func changes(_ count: Int, round: Int) -> [(key: Bytes32, value: [UInt8]?)] {
            var picked: [Bytes32: [UInt8]?] = [:]
            for _ in 0..<count {
                switch random.next() % 4 {
                case 0, 1:
                    let key = random.bytes32()
                    used.append(key)
                    picked[key] = [UInt8(truncatingIfNeeded: round)]
                case 2 where !used.isEmpty: picked[used[Int(random.next() % UInt64(used.count))]] = .some([7, UInt8(truncatingIfNeeded: round)])
                default: picked[used.isEmpty || random.next() % 4 == 0 ? random.bytes32() : used[Int(random.next() % UInt64(used.count))]] = .some(nil)
                }
            }
            return picked.map { (key: $0.key, value: $0.value) }
        }
        func expectModel(_ comment: Comment) throws {
            for key in used {
                #expect(try store.value(key) == model[key], comment)
                #expect(try store.values(of: key, after: 0) == plain.values(of: key, after: 0), comment)
            }
            for _ in 0..<20 { #expect(try store.value(random.bytes32()) == nil, comment) }
        }
        let genesis = changes(600, round: 0)
        for writer in [store, plain] {
            try writer.writeGenesis(StateChanges(values: genesis, createdPages: [(root(0), [0])], removedPages: [], root: root(0)))
        }
        for (key, value) in genesis { model[key] = value }
        var rebuilt = 0, wasReady = false
        for height in UInt64(1)...80 {
            let round = Int(height)
            let block = BlockRecord(height: height, digest: .zero, body: [], certificate: [], stateRoot: root(height), transactions: [])
            if height % 3 == 0 {
                // In slices: read as before until the write ends.
                let written = changes(60, round: round)
                for writer in [store, plain] {
                    try writer.append(block, state: nil)
                    try writer.writeStateSlice(atHeight: height, values: Array(written.prefix(30)), pages: [])
                }
                try store.advanceKeyFilter(keys: 97)
                for writer in [store, plain] { try writer.writeStateSlice(atHeight: height, values: Array(written.dropFirst(30)), pages: []) }
                try expectModel("height \(height), during its slices")
                for writer in [store, plain] { try writer.finishStateWrite(atHeight: height, root: root(height), rootPage: [1], removedPages: []) }
                for (key, value) in written { model[key] = value }
            } else {
                let written = changes(40, round: round)
                for writer in [store, plain] {
                    try writer.append(block, state: StateChanges(values: written, createdPages: [(root(height), [1])], removedPages: [], root: root(height)))
                }
                for (key, value) in written { model[key] = value }
            }
            for _ in 0..<(1 + Int(random.next() % 3)) {
                let before = store.keyFilterStatus.ready
                try store.advanceKeyFilter(keys: 97)
                if before, store.keyFilterStatus.ready, store.keyFilterStatus.fill < 0.3 { rebuilt += 1 }
                wasReady = wasReady || store.keyFilterStatus.ready
            }
            try expectModel("height \(height)")
        }
        #expect(wasReady && rebuilt > 0, "the filter was built, and rebuilt larger")
        while store.keyFilterStatus.fill == 0 || !store.keyFilterStatus.ready { try store.advanceKeyFilter() }
        let skipped = store.keyFilterStatus.readsSkipped
        for _ in 0..<500 { #expect(try store.value(random.bytes32()) == nil) }
        #expect(store.keyFilterStatus.readsSkipped - skipped > 450, "absent keys are answered by the filter")
        try expectModel("at the end")
        // Reopened: no filter until it is built again; the same answers all along.
        let file = store.file
        store.close()
        store = try NodeStore(file: file)
        #expect(!store.keyFilterStatus.ready)
        try expectModel("reopened")
        while !store.keyFilterStatus.ready { try store.advanceKeyFilter(keys: 500) }
        try expectModel("reopened, the filter built again")
        store.close()
        plain.close()
    }

    /// A filter built inside a batch that deleted a key (the node's scan steps run in its
    /// turns' batches) does not outlive the batch's rollback, which brings the key back.
    @Test func theKeyFilterIsForgottenWithAFailedBatch() throws {
        let store = try NodeStore(file: temporaryFile("key-filter-rollback.db"), create: true)
        let (kept, gone) = (SHA256.hash("kept"), SHA256.hash("deleted, then back"))
        func root(_ height: UInt64) -> Bytes32 { SHA256.hash("root \(height)") }
        try store.writeGenesis(StateChanges(values: [(kept, [1]), (gone, [2])], createdPages: [(root(0), [0])], removedPages: [], root: root(0)))
        try store.beginBatch()
        try store.append(
            BlockRecord(height: 1, digest: .zero, body: [], certificate: [], stateRoot: root(1), transactions: []),
            state: StateChanges(values: [(gone, nil)], createdPages: [(root(1), [1])], removedPages: [], root: root(1)))
        while !store.keyFilterStatus.ready { try store.advanceKeyFilter() }
        #expect(try store.value(gone) == nil && store.value(kept) == [1])
        store.rollbackBatch()
        #expect(!store.keyFilterStatus.ready)
        #expect(try store.value(gone) == [2] && store.value(kept) == [1] && store.height == 0)
        while !store.keyFilterStatus.ready { try store.advanceKeyFilter() }
        #expect(try store.value(gone) == [2] && store.value(kept) == [1])
        store.close()
    }

    /// At capacity: every key inserted passes, about 1% of others do, half the bits are set,
    /// and the estimate of the keys is within a few percent.
    @Test func aKeyFilterAtCapacityHasItsRates() {
        var random = SplitMix64(seed: 32)
        var filter = KeyFilter(capacity: 50_000)
        let keys = (0..<50_000).map { _ in random.bytes32() }
        for key in keys { filter.insert(key) }
        #expect(keys.allSatisfy(filter.mayContain))
        let passed = (0..<50_000).count { _ in filter.mayContain(random.bytes32()) }
        #expect(passed > 100 && passed < 1_000, "\(passed) of 50,000 others pass")
        #expect(abs(filter.fill - 0.5) < 0.03 && abs(filter.falsePositiveRate - 0.008) < 0.004)
        #expect(abs(filter.estimatedKeys - 50_000) < 2_500)
    }

    @Test func blocksMustComeInOrderWithTheirState() throws {
        let file = temporaryFile("order.db")
        let state = StoredState(store: try NodeStore(file: file, create: true))
        var ledger = try Ledger.create(Chain().genesis, in: state)
        try state.persistGenesis()
        let outcome = ledger.execute([])
        let skip = BlockRecord(height: 2, digest: .zero, body: nil, certificate: [], stateRoot: outcome.stateRoot, transactions: [])
        #expect(throws: StorageError.self) { try state.persist(skip) }
        let wrongRoot = BlockRecord(height: 1, digest: .zero, body: nil, certificate: [], stateRoot: .zero, transactions: [])
        #expect(throws: StorageError.self) { try state.persist(wrongRoot) }
    }

    @Test func aBatchIsDurableAtItsCommitAllTogetherAndAFailedWriteFailsIt() throws {
        let file = temporaryFile("batch.db")
        let chain = Chain()
        let state = StoredState(store: try NodeStore(file: file, create: true))
        var ledger = try Ledger.create(chain.genesis, in: state)
        try state.persistGenesis()
        let reader = try NodeStore(file: file, readOnly: true)

        try state.store.beginBatch()
        #expect(throws: StorageError.self) { try state.store.beginBatch() }  // not nested
        try chain.run(&ledger, to: 3)
        try state.store.appendSafety([[1], [2]])
        try state.store.putCheckpoint(height: 2, certificate: [9])
        // A block out of order is refused before it writes anything: the batch goes on.
        let skip = BlockRecord(height: 9, digest: .zero, body: nil, certificate: [], stateRoot: .zero, transactions: [])
        #expect(throws: StorageError.self) { try state.store.append(skip, state: StateChanges(values: [], createdPages: [], removedPages: [], root: .zero)) }
        // The writer reads its own writes (a block executes on the state the batch wrote);
        // another connection sees nothing of them before the commit.
        #expect(state.store.height == 3 && state.store.isBatchOpen)
        #expect(try state.store.reading { state.store.height } == 3)
        #expect(reader.height == 0)
        #expect(try reader.safetyRecords().isEmpty)
        #expect(try reader.checkpoint(atOrBelow: 9) == nil)
        #expect(try state.store.commitBatch())
        #expect(!state.store.isBatchOpen)
        #expect(reader.height == 3)
        #expect(try reader.safetyRecords() == [[1], [2]])
        #expect(try reader.checkpoint(atOrBelow: 9)?.height == 2)
        #expect(reader.stateRoot == ledger.stateRoot)

        // A batch with no write commits nothing; one rolled back leaves the store as before.
        try state.store.beginBatch()
        #expect(try !state.store.commitBatch())
        try state.store.beginBatch()
        try state.store.appendSafety([[3]])
        try state.store.setExtra("schedule", [7])
        state.store.rollbackBatch()
        #expect(try reader.safetyRecords() == [[1], [2]])
        #expect(try state.store.extra("schedule") == nil)

        // A write that fails inside a batch fails all of it: later writes and the commit
        // throw, and nothing of the batch is written (a trigger refuses the checkpoint).
        try state.store.beginBatch()
        try state.store.appendSafety([[4]])
        try state.store.database.execute("CREATE TEMP TRIGGER refuse BEFORE INSERT ON checkpoints BEGIN SELECT RAISE(ABORT, 'refused'); END")
        #expect(throws: StorageError.self) { try state.store.putCheckpoint(height: 3, certificate: [8]) }
        #expect(throws: StorageError.self) { try state.store.appendSafety([[5]]) }
        #expect(throws: StorageError.self) { try state.store.commitBatch() }
        #expect(!state.store.isBatchOpen)
        try state.store.database.execute("DROP TRIGGER IF EXISTS refuse")  // created in the batch, gone with it
        #expect(try reader.safetyRecords() == [[1], [2]])
        #expect(try reader.checkpoint(atOrBelow: 9)?.height == 2)

        try state.store.beginBatch()
        try chain.run(&ledger, to: 5)
        try state.store.commitBatch()
        state.store.close()  // a writer holds the database's lock until it closes
        let reopened = try NodeStore(file: file)
        #expect(reopened.height == 5 && reopened.stateRoot == ledger.stateRoot)
        #expect(try recomputedRoot(reopened) == reopened.stateRoot)
    }

    /// Whether a database holds a chain is read, never assumed: a read that fails throws
    /// (before, it was taken for "no chain", and a node starting then would write a genesis
    /// over its chain), and neither a genesis nor a snapshot import is begun.
    @Test func aChainThatCannotBeReadIsNeverTakenForNone() throws {
        let file = temporaryFile("unreadable-meta.db")
        let chain = Chain()
        let state = StoredState(store: try NodeStore(file: file, create: true))
        var ledger = try Ledger.create(chain.genesis, in: state)
        try state.persistGenesis()
        try chain.run(&ledger, to: 2)
        #expect(try state.store.isInitialized)
        // The table of the chain's heights out of reach (as a failing read would leave it).
        try state.store.database.execute("ALTER TABLE meta RENAME TO meta_aside")
        #expect(throws: StorageError.self) { try state.store.isInitialized }
        #expect(throws: StorageError.self) { try state.store.heights() }
        #expect(throws: StorageError.self) { try state.store.writeGenesis(StateChanges(values: [], createdPages: [], removedPages: [], root: .zero)) }
        #expect(throws: StorageError.self) { try state.store.beginImport() }
        try state.store.database.execute("ALTER TABLE meta_aside RENAME TO meta")
        #expect(try state.store.isInitialized && state.store.height == 2 && state.store.stateRoot == ledger.stateRoot)
        #expect(try state.store.heights() == (2, 2))
    }

    /// A batch that defers its sync commits at `synchronous = NORMAL` and leaves the
    /// connection at FULL for every other write; the syncer reports each commit number it
    /// covered, and once one sync failed every later report is a failure.
    @Test func aBatchDeferringItsSyncLeavesItToTheSyncer() throws {
        let file = temporaryFile("deferred.db")
        let chain = Chain()
        let state = StoredState(store: try NodeStore(file: file, create: true))
        var ledger = try Ledger.create(chain.genesis, in: state)
        try state.persistGenesis()
        let database = state.store.database
        func level() throws -> Int64? { try database.integer("PRAGMA synchronous") }
        #expect(try level() == 2)
        try state.store.beginBatch(deferringSync: true)
        try chain.run(&ledger, to: 2)
        #expect(try level() == 1)  // for the batch's transaction only
        #expect(try state.store.commitBatch())
        #expect(try level() == 2)
        try state.store.beginBatch(deferringSync: true)  // nothing written: nothing changed
        #expect(try !state.store.commitBatch())
        #expect(try level() == 2)
        try state.store.beginBatch(deferringSync: true)
        try state.store.appendSafety([[1]])
        state.store.rollbackBatch()
        #expect(try level() == 2)
        #expect(try state.store.safetyRecords().isEmpty)

        let reports = Mutex<[(UInt64, String?)]>([])
        let calls = Atomic<Int>(0)
        let syncer = WALSyncer(databaseFile: file, sync: { descriptor in
            guard calls.add(1, ordering: .relaxed).newValue > 1 else { return fdatasync(descriptor) }
            errno = EIO
            return -1
        }) { through, failure in reports.withLock { $0.append((through, failure.map(\.description))) } }
        syncer.start()
        defer { syncer.stop() }
        syncer.request(through: 1)
        #expect(syncer.wait(through: 1, timeout: .seconds(5)))
        #expect(eventually(5) { reports.withLock { $0.count } == 1 })
        #expect(reports.withLock { $0.first?.0 == 1 && $0.first?.1 == nil })
        #expect(!syncer.wait(through: 2, timeout: .milliseconds(20)))  // not asked: times out
        syncer.request(through: 1)  // covered already: no sync
        syncer.request(through: 3)
        #expect(eventually(5) { reports.withLock { $0.count } == 2 })
        #expect(!syncer.wait(through: 3, timeout: .seconds(5)))  // failed
        syncer.request(through: 4)
        #expect(eventually(5) { reports.withLock { $0.count } == 3 })
        let failures = reports.withLock { $0.dropFirst().map { "\($0.0) \($0.1 ?? "")" } }
        #expect(failures.count == 2 && failures.allSatisfy { $0.contains("deferred.db-wal: the write-ahead log could not be synced") })
        #expect(failures.first?.hasPrefix("3 ") == true && failures.last?.hasPrefix("4 ") == true)
        #expect(calls.load(ordering: .relaxed) == 2, "a sync after a failure: \(calls.load(ordering: .relaxed)) calls")
        #expect(syncer.counts.withLock { $0.syncs } == 1)
    }

    /// The writer's WAL is copied into the main file by the checkpointer's thread once past
    /// its threshold: it stays bounded while blocks are written, and nothing is lost.
    @Test func theWALIsCheckpointedOffTheWritersThread() throws {
        let file = temporaryFile("checkpointed.db")
        let chain = Chain()
        var tuning = NodeStore.Tuning()
        tuning.walCheckpointPages = 40
        let state = StoredState(store: try NodeStore(file: file, create: true, tuning: tuning))
        var ledger = try Ledger.create(chain.genesis, in: state)
        try state.persistGenesis()
        func walPages() -> Int {
            ((try? FileManager.default.attributesOfItem(atPath: file + "-wal")[.size] as? Int) ?? 0) / 4_096
        }
        var largest = 0
        for height in stride(from: 10, through: 200, by: 10) {
            try chain.run(&ledger, to: UInt64(height))
            largest = max(largest, walPages())
            #expect(eventually(10) { state.store.checkpoints.made > 0 || walPages() < 40 })
        }
        #expect(state.store.checkpoints.made > 0 && state.store.checkpoints.failed == 0, "\(state.store.checkpoints)")
        // Bounded: the WAL restarts from its start once copied. Its file keeps its largest
        // size (the blocks written while a checkpoint ran, ~70 pages each here), far below the
        // ~14,000 pages the 200 blocks wrote.
        #expect(largest < 2_000, "the WAL reached \(largest) pages")
        // And its file is cut back once the WAL restarts (journal_size_limit), rather than
        // keeping the largest size it reached: without it the file never shrinks.
        var shrunk = false
        for _ in 0..<100 where !shrunk {
            try chain.run(&ledger, to: ledger.height + 1)
            shrunk = walPages() < largest
            if !shrunk { Thread.sleep(forTimeInterval: 0.02) }
        }
        #expect(shrunk, "the WAL file stayed at \(walPages()) pages, its largest")
        state.store.close()
        let reopened = try NodeStore(file: file)
        #expect(reopened.height == ledger.height && reopened.stateRoot == ledger.stateRoot)
        #expect(try recomputedRoot(reopened) == reopened.stateRoot)
    }

    @Test func damagedForeignAndFutureFilesAreRefusedNamingTheFile() throws {
        let garbage = temporaryFile("garbage.db")
        try Data(repeating: 0x42, count: 8_192).write(to: URL(fileURLWithPath: garbage))
        #expect { _ = try NodeStore(file: garbage) } throws: { error in
            "\(error)".contains(garbage)
        }

        let file = temporaryFile("node.db")
        do {
            let state = StoredState(store: try NodeStore(file: file, create: true))
            var ledger = try Ledger.create(Chain().genesis, in: state)
            try state.persistGenesis()
            try Chain().run(&ledger, to: 30)
        }
        // Truncated to half: SQLite finds pages missing and says so.
        let truncated = temporaryFile("truncated.db")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: truncated))
        #expect { let store = try NodeStore(file: truncated); try store.integrityCheck() } throws: { error in
            guard let error = error as? StorageError, case .corrupt(let named, _) = error else { return false }
            return named == truncated
        }

        // A file from a newer build is not opened by this one.
        let future = temporaryFile("future.db")
        try FileManager.default.copyItem(atPath: file, toPath: future)
        _ = try? FileManager.default.copyItem(atPath: file + "-wal", toPath: future + "-wal")
        try Database(file: future, mode: .readWrite, create: false).execute("UPDATE schema_version SET version = 99")
        #expect(throws: StorageError.schema(file: future, found: 99, supported: NodeStore.schemaVersion)) { _ = try NodeStore(file: future) }
        // A version no build wrote, below 1: damaged, said so (−2^62 once migrated for ever).
        for version in [Int64.min, -(1 << 62), -1, 0] {
            try Database(file: future, mode: .readWrite, create: false).execute("UPDATE schema_version SET version = \(version)")
            #expect(throws: StorageError.corrupt(file: future, reason: "schema_version holds \(version), no version this software wrote")) { _ = try NodeStore(file: future) }
        }

        // A first block recorded past the blocks (or at none): damaged, said so.
        try Database(file: future, mode: .readWrite, create: false).execute("UPDATE schema_version SET version = \(NodeStore.schemaVersion)")
        for first in [UInt64.max, 1 << 63, 31, 0] {
            let database = try Database(file: future, mode: .readWrite, create: false)
            try database.statement("INSERT OR REPLACE INTO meta (name, value) VALUES ('first_block', ?)").bind(1, NodeStore.bytes(first)).run()
            #expect { _ = try NodeStore(file: future) } throws: { error in
                guard let error = error as? StorageError, case .corrupt(future, let reason) = error else { return false }
                return reason.contains("first block stored is recorded at height \(first)")
            }
        }

        // An empty file opened without `create` is not a node database.
        let empty = temporaryFile("empty.db")
        #expect(throws: StorageError.self) { _ = try NodeStore(file: empty) }
    }

    /// A version-1 file (before the checkpoint history tables) is migrated when opened.
    @Test func versionOneFilesAreMigrated() throws {
        let file = temporaryFile("v1.db")
        do {
            let database = try Database(file: file, mode: .readWrite, create: true)
            for sql in NodeStore.migrations[1] ?? [] { try database.execute(sql) }
        }
        let store = try NodeStore(file: file)
        #expect(try store.database.integer("SELECT version FROM schema_version") == Int64(NodeStore.schemaVersion))
        #expect(try store.database.integer("SELECT count(*) FROM sqlite_master WHERE name = 'value_archive'") == 1)
    }

    /// Replaced values and tree nodes stay until a checkpoint after them is served.
    @Test func historyIsKeptUntilPruned() throws {
        let file = temporaryFile("history.db")
        let state = StoredState(store: try NodeStore(file: file, create: true))
        var ledger = try Ledger.create(Chain().genesis, in: state)
        try state.persistGenesis()
        try Chain().run(&ledger, to: 4)
        let key = StateKeys.account(Ed25519PublicKey(SHA256.hash("citizen 1")))
        let history = try state.store.values(of: key, after: 1)
        #expect(history.count == 4)  // replaced at 2, 3, 4, then the current value
        let nodes = try state.store.database.integer("SELECT count(*) FROM tree_pages") ?? 0
        #expect(try state.store.database.integer("SELECT count(*) FROM history") == 4)  // one row per block
        try state.store.pruneHistory(through: 4)
        #expect(try state.store.values(of: key, after: 1).count == 1)
        #expect(try state.store.database.integer("SELECT count(*) FROM history") == 0)
        #expect(try state.store.database.integer("SELECT count(*) FROM value_archive") == 0)
        #expect(try state.store.database.integer("SELECT count(*) FROM tree_pages") ?? 0 < nodes)
        #expect(try recomputedRoot(state.store) == state.store.stateRoot)
    }

    /// A tree page retired by one block and created again by a later one (a value put back)
    /// is live: pruning must not delete it, whatever the store remembers of retired nodes
    /// (the in-memory mirror of `retired_nodes`, reloaded after a failed append).
    /// A transaction included twice (applied in one block, its copy rejected in the next):
    /// each block keeps its own result at its position, and the transaction's place is
    /// where it applied. Before schema 6 the copy moved the only row, and the first block
    /// was read without it.
    @Test func aTransactionIncludedTwiceKeepsBothBlocksAndItsAppliedPlace() throws {
        let store = try NodeStore(file: temporaryFile("twice.db"), create: true)
        let a = SHA256.hash("node a"), b = SHA256.hash("node b"), c = SHA256.hash("node c")
        try store.writeGenesis(StateChanges(values: [], createdPages: [(a, [1])], removedPages: [], root: a))
        let twice = SHA256.hash("a transaction"), other = SHA256.hash("another"), account = SHA256.hash("its signer")
        let applied: [UInt8] = [0], rejected: [UInt8] = [1] + Array("nonceUsed(1)".utf8)
        try store.append(
            BlockRecord(height: 1, digest: SHA256.hash("block 1"), body: [], certificate: [], stateRoot: b,
                        transactions: [.init(id: other, result: applied, accounts: []), .init(id: twice, result: applied, accounts: [account])]),
            state: StateChanges(values: [], createdPages: [(b, [2])], removedPages: [a], root: b))
        try store.append(
            BlockRecord(height: 2, digest: SHA256.hash("block 2"), body: [], certificate: [], stateRoot: c,
                        transactions: [.init(id: twice, result: rejected, accounts: [account])]),
            state: StateChanges(values: [], createdPages: [(c, [3])], removedPages: [b], root: c))
        #expect(try store.block(at: 1)?.transactions.map(\.id) == [other, twice])
        #expect(try store.block(at: 1)?.transactions.map(\.result) == [applied, applied])
        #expect(try store.block(at: 2)?.transactions.map(\.result) == [rejected])
        let place = try #require(try store.transaction(twice))
        #expect(place.height == 1 && place.position == 1 && place.result == applied)
        // The account's transactions, read by their places: the copy (not where the
        // transaction is placed) from its block's results.
        let concerning = try store.accountTransactions(of: account, limit: 10)
        #expect(concerning.map(\.height) == [2, 1] && concerning.map(\.position) == [0, 1])
        #expect(concerning.map(\.transaction.id) == [twice, twice] && concerning.map(\.transaction.result) == [rejected, applied])
        #expect(try store.accountTransactions(of: account, limit: 10, atMost: 1).map(\.height) == [1])
        #expect(try store.accountTransactions(of: account, limit: 1).map(\.height) == [2])
        // Headers without bodies: what a block summary needs.
        let headers = try store.blockHeaders(from: 1, through: .max)
        #expect(headers.map(\.height) == [1, 2] && headers.map(\.transactionCount) == [2, 1] && headers.map(\.stateRoot) == [b, c])
        #expect(headers.map(\.digest) == [SHA256.hash("block 1"), SHA256.hash("block 2")])
        #expect(try store.blockHeaders(from: 2, through: 1).isEmpty && store.blockHeaders(from: .max, through: .max).isEmpty)
    }

    @Test func aNodeCreatedAgainSurvivesPruning() throws {
        let store = try NodeStore(file: temporaryFile("recreated.db"), create: true)
        let a = SHA256.hash("node a"), b = SHA256.hash("node b")
        try store.writeGenesis(StateChanges(values: [], createdPages: [(a, [1])], removedPages: [], root: a))
        func block(_ height: UInt64, created: Bytes32, removed: Bytes32) throws {
            try store.append(
                BlockRecord(height: height, digest: SHA256.hash("block \(height)"), body: [], certificate: [], stateRoot: created, transactions: []),
                state: StateChanges(values: [], createdPages: [(created, created == a ? [1] : [2])], removedPages: [removed], root: created))
        }
        try block(1, created: b, removed: a)  // a retired
        // A failed append (a wrong height) leaves the table and the mirror as they were.
        #expect(throws: StorageError.self) { try block(7, created: a, removed: b) }
        try block(2, created: a, removed: b)  // a back, b retired
        try store.pruneHistory(through: 2)
        #expect(try store.treePage(a) != nil, "a live node was pruned")
        #expect(try store.treePage(b) == nil)
        try block(3, created: b, removed: a)  // and once more
        try block(4, created: a, removed: b)
        try store.pruneHistory(through: 4)
        #expect(try store.treePage(a) != nil && store.treePage(b) == nil)
        // A store opened afresh (a restarted node) folds the history rows into the same
        // mirror: a retired at 5 and revived at 6 must survive the prune.
        try block(5, created: b, removed: a)
        try block(6, created: a, removed: b)
        store.close()
        let reopened = try NodeStore(file: store.file)
        try reopened.pruneHistory(through: 6)
        #expect(try reopened.treePage(a) != nil, "a live node was pruned after a reopen")
        #expect(try reopened.treePage(b) == nil)
    }

    /// A version-3 file: 300 keys, a checkpoint at height 1 where the first key held [1],
    /// block 2 setting it to [2]; one row per binary tree node (both trees), one per
    /// retired node. `dropping`: a node of the checkpoint's tree left out.
    struct VersionThreeFile {
        let file = temporaryFile("v3.db")
        let keys: [StateKey]
        let old: MemoryStateStore, new: MemoryStateStore

        init(droppingACheckpointNode: Bool = false) throws {
            var random = SplitMix64(seed: 9)
            keys = (0..<300).map { _ in random.bytes32() }
            func tree(_ values: [(StateKey, [UInt8])]) -> MemoryStateStore {
                var memory = MemoryStateStore()
                let update = StateTree.update(root: .zero, changes: values.map { ($0.0, StateTree.valueHash($0.1)) }, nodes: memory)
                memory.commit(StateBatch(values: values.map { ($0.0, $0.1) }, tree: update))
                return memory
            }
            old = tree(keys.enumerated().map { ($1, $0 == 0 ? [1] : [2]) })
            new = tree(keys.map { ($0, [2]) })
            let database = try Database(file: file, mode: .readWrite, create: true)
            try database.execute("PRAGMA journal_mode = WAL")
            for version in 1...3 { for sql in NodeStore.migrations[version] ?? [] { try database.execute(sql) } }
            try database.execute("UPDATE schema_version SET version = 3")
            var nodes: [SHA256Digest: TreeNode] = [:]
            for store in [old, new] { for page in store.pages.values { nodes.merge(page.nodes) { a, _ in a } } }
            if droppingACheckpointNode { nodes[old.root] = nil }
            for (hash, node) in nodes {
                try database.statement("INSERT INTO tree_nodes (hash, node) VALUES (?, ?)").bind(1, hash.bytes).bind(2, node.wireBytes).run()
            }
            for key in keys { try database.statement("INSERT INTO state (key, value) VALUES (?, ?)").bind(1, key.bytes).bind(2, [2]).run() }
            try database.statement("INSERT INTO retired_nodes (hash, height) VALUES (?, 2)").bind(1, old.root.bytes).run()
            try database.statement("INSERT INTO value_archive (key, height, value) VALUES (?, 2, ?)").bind(1, keys[0].bytes).bind(2, [1]).run()
            for (height, root) in [(1, old.root), (2, new.root)] {
                try database.statement("INSERT INTO blocks (height, digest, body, certificate, state_root, transaction_count) VALUES (?, ?, x'', x'', ?, 0)")
                    .bind(1, Int64(height)).bind(2, SHA256.hash("block \(height)").bytes).bind(3, root.bytes).run()
            }
            try database.statement("INSERT INTO checkpoints (height, certificate) VALUES (1, x'')").run()
            try database.statement("INSERT INTO meta (name, value) VALUES ('state_root', ?)").bind(1, new.root.bytes).run()
            try database.statement("INSERT INTO meta (name, value) VALUES ('height', ?)").bind(1, NodeStore.bytes(2)).run()
        }
    }

    /// A version-3 file is migrated: the history moves to per-block rows, and the node
    /// converts the tree to pages, the current one and the served checkpoint's, which
    /// stay provable until a later checkpoint is served.
    @Test func versionThreeFilesAreMigratedAndTheirTreeConvertedToPages() throws {
        let v3 = try VersionThreeFile()
        let store = try NodeStore(file: v3.file)
        #expect(try store.database.integer("SELECT count(*) FROM sqlite_master WHERE name IN ('retired_nodes', 'value_archive_by_height')") == 0)
        #expect(try store.database.integer("SELECT count(*) FROM history") == 1)
        #expect(try store.values(of: v3.keys[0], after: 1) == [[1], [2]])
        #expect(try store.hasLegacyTree())

        let pages = try StoredState.convertLegacyTree(store)
        #expect(try !store.hasLegacyTree())
        #expect(pages > v3.new.pageCount)  // and the pages only the checkpoint's tree reaches
        let state = StoredState(store: store)
        for (root, value) in [(v3.old.root, [UInt8]([1])), (v3.new.root, [2])] {
            let proof = StateTree.proof(for: v3.keys[0], root: root, nodes: state)
            try proof.verifyInclusion(key: v3.keys[0], value: value, root: root)
        }
        // Once a later checkpoint is served, only the current tree's pages are left.
        try store.pruneHistory(through: 2)
        #expect(try store.database.integer("SELECT count(*) FROM tree_pages") == Int64(v3.new.pageCount))
        #expect(try store.values(of: v3.keys[0], after: 1) == [[2]])
        store.close()
        _ = try NodeStore(file: v3.file)  // and it opens cleanly
    }

    /// A checkpoint tree with a node missing is left out of the conversion (its proofs
    /// wait for the next checkpoint); the node still starts on the current tree.
    @Test func aDamagedCheckpointTreeDoesNotStopTheConversion() throws {
        let v3 = try VersionThreeFile(droppingACheckpointNode: true)
        let store = try NodeStore(file: v3.file)
        #expect(try StoredState.convertLegacyTree(store) == v3.new.pageCount)
        let state = StoredState(store: store)
        try StateTree.proof(for: v3.keys[0], root: v3.new.root, nodes: state).verifyInclusion(key: v3.keys[0], value: [2], root: v3.new.root)
        #expect(throws: StateProofError.self) {
            try StateTree.proof(for: v3.keys[0], root: v3.old.root, nodes: state).verifyInclusion(key: v3.keys[0], value: [1], root: v3.old.root)
        }
        store.close()
        _ = try NodeStore(file: v3.file)
    }

    @Test func readOnlyReaderFollowsAWriterWithoutErrors() throws {
        let file = temporaryFile("live.db")
        let writer = try CrashTest.start(file)
        defer {
            writer.send(SIGTERM)
            writer.wait()
        }
        #expect(CrashTest.waitFor(file))
        let reader = try NodeStore(file: file, readOnly: true)
        var heights: [UInt64] = []
        let deadline = Date().addingTimeInterval(1.5)
        while Date() < deadline {
            heights.append(reader.height)
            if let block = try reader.block(at: reader.height) { #expect(block.certificate == Array("certificate of \(block.height)".utf8)) }
            #expect(throws: StorageError.readOnly(file: file)) { try reader.appendSafety([[1]]) }
            Thread.sleep(forTimeInterval: 0.01)
        }
        #expect(heights.last! > heights.first!, "the reader saw the writer's new blocks")
    }

    /// A writing store holds `<file>.lock` until it closes: a second writer is refused,
    /// naming the holder; readers take no lock.
    @Test func aWriterHoldsTheDatabasesLockUntilItCloses() throws {
        let file = temporaryFile("lock.db")
        do {
            let first = try NodeStore(file: file, create: true)
            #expect(throws: StorageError.inUse(file: file, holder: "process \(getpid())")) { _ = try NodeStore(file: file) }
            #expect(try NodeStore(file: file, readOnly: true).height == first.height)
        }
        _ = try NodeStore(file: file)
        try FileManager.default.removeItem(atPath: file + ".lock")
        try FileManager.default.createDirectory(atPath: file + ".lock", withIntermediateDirectories: false)
        #expect(throws: StorageError.self) { _ = try NodeStore(file: file) }  // a lock it cannot take is an error, not skipped
    }

    @Test func pruningKeepsHeadersAndBackupCopiesOnline() throws {
        let file = temporaryFile("prune.db")
        let state = StoredState(store: try NodeStore(file: file, create: true))
        var ledger = try Ledger.create(Chain().genesis, in: state)
        try state.persistGenesis()
        try Chain().run(&ledger, to: 10)
        let store = state.store
        #expect(store.bodiesKeptFrom == 1)
        #expect(try store.pruneBodies(below: 6, limit: 3) == 3 && store.bodiesKeptFrom == 4)
        #expect(try store.pruneBodies(below: 6) == 2 && store.bodiesKeptFrom == 6)
        #expect(try store.pruneBodies(below: 6) == 0)
        #expect(try store.block(at: 5)?.body == nil && store.block(at: 5)?.certificate == Array("cert 5".utf8))
        #expect(try store.block(at: 6)?.body != nil)
        #expect(try store.pruneBodies(below: .max, limit: 0) == 0)
        #expect(try store.pruneBodies(below: .max, limit: 2) == 2 && store.bodiesKeptFrom == 8, "never past the last block")
        #expect(try store.pruneBodies(below: .max) == 3 && store.bodiesKeptFrom == 11 && store.height == 10)
        let copy = temporaryFile("backup.db")
        try store.backup(to: copy)
        let restored = try NodeStore(file: copy)
        #expect(restored.height == 10 && restored.stateRoot == store.stateRoot)
        #expect(try recomputedRoot(restored) == restored.stateRoot)
    }
}

/// A batch whose transaction SQLite ended after an error (it rolls a whole transaction back
/// on an I/O error or running out of memory, even in a read) has failed: its later writes
/// are refused, never committed one by one, and its commit throws. The rollback is made
/// here by hand, then a statement fails, as it would.
@Suite struct BatchEndedBySQLiteTests {
    @Test func aBatchWhoseTransactionSQLiteEndedWritesNothingMore() throws {
        let file = Scratch.file("ended-batch.db")
        let database = try Database(file: file, mode: .readWrite, create: true)
        try database.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY)")
        func insert(_ id: Int64) throws(StorageError) {
            try database.transaction { () throws(StorageError) in try database.statement("INSERT INTO rows (id) VALUES (?)").bind(1, id).run() }
        }
        try database.beginBatch()
        try insert(1)
        try database.execute("ROLLBACK")  // what SQLite does after SQLITE_IOERR or SQLITE_NOMEM
        #expect(throws: StorageError.self) { try database.statement("SELECT abs(-9223372036854775808)").run() }
        #expect(throws: StorageError.self) { try insert(2) }
        #expect(throws: StorageError.self) { _ = try database.commitBatch() }
        let count = try database.statement("SELECT count(*) FROM rows").first { $0.int64(0) }
        #expect(count == 0, "rows written after the batch's transaction ended")
    }
}
