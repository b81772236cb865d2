// The fold of consecutive blocks' state batches (`StateWindow`, what a store that writes
// its state only at checkpoints keeps in memory): read through, it gives what the blocks
// applied one by one give; written as one batch, the same state, with no page of a state in
// between left behind and none of the last state missing.
import CalissonTestKit
import CalissonCrypto
import Testing
import Wire
@testable import Ledger

@Suite struct StateWindowTests {
    /// One block's batch on `store`: random writes and deletions among a few keys, with
    /// values drawn from a few, so that keys come back to earlier values (pages made again).
    static func batch(_ store: MemoryStateStore, keys: [StateKey], random: inout SplitMix64) -> StateBatch {
        var changes: [StateKey: [UInt8]?] = [:]
        for _ in 0..<Int(random.next() % 6 + 1) {
            let key = keys[Int(random.next() % UInt64(keys.count))]
            let pick = random.next() % 4
            changes[key] = pick == 0 ? .some(nil) : .some(Array("value \(pick)".utf8))
        }
        let values = changes.map { (key: $0.key, value: $0.value) }
        let tree = StateTree.update(root: store.root, changes: values.map { ($0.key, $0.value.map(StateTree.valueHash)) }, nodes: store)
        return StateBatch(values: values, tree: tree)
    }

    @Test(arguments: [1, 3, 8]) func foldedBatchesGiveTheStateOfTheBlocksOneByOne(interval: Int) {
        var random = SplitMix64(seed: UInt64(interval))
        let keys = (0..<40).map { _ in random.bytes32() }
        var byBlock = MemoryStateStore()  // every block applied
        var written = MemoryStateStore()  // the folds written at each multiple of the interval
        var window = StateWindow()
        for height in 1...200 {
            let batch = Self.batch(byBlock, keys: keys, random: &random)
            byBlock.commit(batch)
            window.add(batch)
            // Read through (as `StoredState` does): the values and every live page.
            #expect(window.root == byBlock.root)
            for key in keys {
                let through = window.value(key) ?? written.value(key)
                #expect(through == byBlock.value(key), "height \(height)")
            }
            for (hash, page) in byBlock.pages {
                #expect((window.page(hash) ?? written.treePage(hash))?.root == page.root, "height \(height): page \(hash.hex) unreadable")
            }
            if height % interval == 0 {
                written.commit(window.batch!)
                window = StateWindow()
                #expect(written.root == byBlock.root && written.values == byBlock.values, "height \(height)")
                #expect(Set(written.pages.keys) == Set(byBlock.pages.keys), "height \(height): pages differ")
            }
        }
        #expect(StateWindow().batch == nil && StateWindow().isEmpty)
    }
}
