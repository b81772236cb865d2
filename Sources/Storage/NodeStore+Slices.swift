import Wire

/// The state written in slices (Docs/STORAGE.md, "The state written in slices"): a node
/// moves its stored state from `stateHeight` to a later checkpoint's over several commits
/// (one slice per turn of its loop) instead of one long one that would stall its loop,
/// then moves it there at once (`finishStateWrite`). Meanwhile the stored state is still
/// the one at `stateHeight`, for the node's reads and for any reader of the file:
/// - a value a slice replaced was archived at the new height first (as a whole write does);
///   a key it added is listed in `state_slice_added`; `value` reads around both;
/// - the pages it wrote are new ones (a page is keyed by its hash: none of the stored
///   tree's is touched), the new tree's root page excepted, written by `finishStateWrite`,
///   so that no reader finds the new tree before the state is there;
/// - the meta record `state_slicing` names the height being written; each slice's row in
///   `state_slices` lists what it archived and the pages it wrote.
/// An open that finds a write unfinished (the node stopped in the middle) undoes it
/// (`undoUnfinishedStateWrite`): the stored state is the one at `stateHeight`, and the
/// node executes the blocks above it again, as after any restart.
extension NodeStore {
    /// A write in slices under way.
    struct Slicing {
        /// The height whose state is being written.
        let height: UInt64
        /// The keys whose value at the stored state's height is archived at `height`, in
        /// the order they were written.
        var archived: [Bytes32] = []
        /// The keys the stored state did not have.
        var added: Set<Bytes32> = []
        /// Pages retired and not pruned yet that a slice wrote again (live again in the new
        /// state: `finishStateWrite` records them as revived).
        var revived: [Bytes32] = []
        /// `archived` as a set, for reads.
        var archivedSet: Set<Bytes32> = []

        func touches(_ key: Bytes32) -> Bool { archivedSet.contains(key) || added.contains(key) }
    }

    /// The height whose state is being written in slices, if a write is under way.
    public var stateWriteUnderWay: UInt64? { ((try? currentSlicing()) ?? nil)?.height }

    /// The write under way, loaded from the file once (a writing store) or read again at each
    /// call (a read-only one: the node may start or finish a write meanwhile).
    func currentSlicing() throws(StorageError) -> Slicing? {
        if slicingLoaded, !isReadOnly { return slicing }
        guard let marker = try meta("state_slicing") else {
            slicing = nil
            slicingLoaded = true
            return nil
        }
        let height = Self.uint64(marker)
        if isReadOnly {
            // The read-only path reads the tables per value (`valueBeforeSlices`): only the height.
            return Slicing(height: height)
        }
        var loaded = Slicing(height: height)
        let rows = try database.statement("SELECT archived, revived FROM state_slices WHERE height = ? ORDER BY sequence")
            .bind(1, height).all { ($0.blob(0) ?? [], $0.blob(1) ?? []) }
        for (archived, revived) in rows {
            loaded.archived += Self.hashes(archived)
            loaded.revived += Self.hashes(revived)
        }
        loaded.archivedSet = Set(loaded.archived)
        loaded.added = Set(try database.statement("SELECT key FROM state_slice_added").all { $0.blob(0).flatMap { Bytes32($0) } }.compactMap { $0 })
        slicing = loaded
        slicingLoaded = true
        return loaded
    }

    /// The value `key` has in the stored state if a write under way changed it in the
    /// `state` table (`.some(nil)`: the key was added by the write, the stored state does not
    /// have it); nil when the table holds the stored state's value.
    func valueBeforeSlices(_ key: Bytes32) throws(StorageError) -> [UInt8]?? {
        guard let slicing = try currentSlicing() else { return nil }
        if !isReadOnly, !slicing.touches(key) { return nil }
        if let archived = try database.statement("SELECT value FROM value_archive WHERE key = ? AND height = ?")
            .bind(1, key).bind(2, slicing.height).first({ $0.blob(0) ?? [] }) {
            return .some(archived)
        }
        if isReadOnly {
            let added = try database.statement("SELECT 1 FROM state_slice_added WHERE key = ?").bind(1, key).first { _ in true } ?? false
            return added ? .some(nil) : nil
        }
        return slicing.added.contains(key) ? .some(nil) : nil
    }

    /// Writes one slice of the state at `height` (a stored block above `stateHeight`):
    /// `values` (nil: deleted) and `pages` (encoded, by hash; never the new tree's root
    /// page, which `finishStateWrite` writes), each key and page in one slice only. The
    /// stored state stays at `stateHeight` until `finishStateWrite`.
    public func writeStateSlice(
        atHeight height: UInt64, values: [(key: Bytes32, value: [UInt8]?)], pages: [(hash: Bytes32, page: [UInt8])]
    ) throws(StorageError) {
        guard !isReadOnly else { throw .readOnly(file: file) }
        guard height > stateHeight, height <= self.height else {
            throw .invalid(file: file, reason: "a slice of the state at \(height), the stored state being at \(stateHeight) and the last block \(self.height)")
        }
        if let underWay = try currentSlicing(), underWay.height != height {
            throw .invalid(file: file, reason: "a slice of the state at \(height) while the write at \(underWay.height) is under way")
        }
        do {
            try database.transaction { () throws(StorageError) in try writeSliceTransaction(height, values: values, pages: pages) }
        } catch {
            forgetCaches()
            throw error
        }
    }

    private func writeSliceTransaction(
        _ height: UInt64, values: [(key: Bytes32, value: [UInt8]?)], pages: [(hash: Bytes32, page: [UInt8])]
    ) throws(StorageError) {
        var slicing = try currentSlicing() ?? Slicing(height: height)
        if self.slicing == nil { try setMeta("state_slicing", Self.bytes(height)) }
        var archived: [UInt8] = []
        for (key, value) in values {
            guard !slicing.touches(key) else { throw .invalid(file: file, reason: "key \(key.hex) in two slices of the state at \(height)") }
            try database.statement("INSERT OR REPLACE INTO value_archive (key, height, value) SELECT key, ?, value FROM state WHERE key = ?")
                .bind(1, height).bind(2, key).run()
            if database.changes > 0 {
                archived += key.bytes
                slicing.archived.append(key)
                slicing.archivedSet.insert(key)
            } else {
                try database.statement("INSERT INTO state_slice_added (key) VALUES (?)").bind(1, key).run()
                slicing.added.insert(key)
            }
            if let value {
                storedKeys.written(key)
                try database.statement("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)").bind(1, key).bind(2, value).run()
            } else {
                try database.statement("DELETE FROM state WHERE key = ?").bind(1, key).run()
            }
        }
        var retiredAt = try retiredHeights()
        retiredCache = nil  // changed in place below, set again after
        var written: [UInt8] = [], revived: [UInt8] = []
        written.reserveCapacity(pages.count * Bytes32.byteCount)
        for (hash, page) in pages {
            try database.statement("INSERT OR REPLACE INTO tree_pages (hash, page) VALUES (?, ?)").bind(1, hash).bind(2, page).run()
            // A retired page made again: live in the new state, so no pruning may delete it
            // (recorded, so that a reloaded `retiredHeights` knows it too).
            if retiredAt.removeValue(forKey: hash) != nil {
                slicing.revived.append(hash)
                revived += hash.bytes
            } else {
                written += hash.bytes
            }
        }
        try database.statement("INSERT INTO state_slices (height, archived, pages, revived) VALUES (?, ?, ?, ?)")
            .bind(1, height).bind(2, archived).bind(3, written).bind(4, revived).run()
        retiredCache = retiredAt
        self.slicing = slicing
        slicingLoaded = true
    }

    /// Ends the write in slices at `height` (its state then stored, as `writeState` would
    /// have left it): writes the new tree's root page `rootPage` (nil: an empty tree), retires
    /// `removedPages` (the stored tree's pages the new one does not have), records what the
    /// slices archived and revived, and moves the stored state to `height`, whose block must
    /// record `root`. With no slice written (a write with no value and no page), it is one
    /// commit.
    public func finishStateWrite(atHeight height: UInt64, root: Bytes32, rootPage: [UInt8]?, removedPages: [Bytes32]) throws(StorageError) {
        guard !isReadOnly else { throw .readOnly(file: file) }
        let stored = stateHeight
        guard height > stored, height <= self.height, let block = try self.block(at: height) else {
            throw .invalid(file: file, reason: "the state written at \(height), the stored state being at \(stored) and the last block \(self.height)")
        }
        guard block.stateRoot == root else { throw .invalid(file: file, reason: "the state written at \(height) is not the one block \(height) recorded") }
        let slicing = try currentSlicing() ?? Slicing(height: height)
        guard slicing.height == height else {
            throw .invalid(file: file, reason: "the write at \(height) finished while the one at \(slicing.height) is under way")
        }
        do {
            try database.transaction { () throws(StorageError) in
                var retiredAt = try retiredHeights()
                retiredCache = nil
                var revived = slicing.revived.flatMap(\.bytes)
                if root != .zero, let rootPage {
                    try database.statement("INSERT OR REPLACE INTO tree_pages (hash, page) VALUES (?, ?)").bind(1, root).bind(2, rootPage).run()
                    if retiredAt.removeValue(forKey: root) != nil { revived += root.bytes }
                }
                var retired: [UInt8] = []
                retired.reserveCapacity(removedPages.count * Bytes32.byteCount)
                for hash in removedPages {
                    retiredAt[hash] = height
                    retired += hash.bytes
                }
                let archived = slicing.archived.flatMap(\.bytes)
                if !(retired.isEmpty && revived.isEmpty && archived.isEmpty) {
                    try database.statement("INSERT OR REPLACE INTO history (height, retired, revived, archived) VALUES (?, ?, ?, ?)")
                        .bind(1, height).bind(2, retired).bind(3, revived).bind(4, archived).run()
                }
                try database.execute("DELETE FROM state_slices")
                try database.execute("DELETE FROM state_slice_added")
                try deleteMeta("state_slicing")
                try setMeta("state_root", root.bytes)
                try setMeta("state_height", Self.bytes(height))
                retiredCache = retiredAt
            }
        } catch {
            forgetCaches()
            throw error
        }
        self.slicing = nil
        slicingLoaded = true
    }

    /// At open: a write in slices left unfinished (the node stopped during it) is undone in
    /// one transaction: the archived values put back, the added keys deleted, the pages it
    /// wrote deleted (but those retired by an earlier write, which stay for older proofs),
    /// and the retired pages it brought back retired again, at the stored state's height
    /// (a pruning meanwhile may have dropped the history row that named them).
    /// The stored state is then the one at `stateHeight`, as before the write began.
    func undoUnfinishedStateWrite() throws(StorageError) {
        guard let marker = try meta("state_slicing") else { return }
        let height = Self.uint64(marker)
        do {
            try database.transaction { () throws(StorageError) in
                let rows = try database.statement("SELECT archived, pages, revived FROM state_slices WHERE height = ? ORDER BY sequence")
                    .bind(1, height).all { ($0.blob(0) ?? [], $0.blob(1) ?? [], $0.blob(2) ?? []) }
                let revived = rows.flatMap(\.2)
                if !revived.isEmpty {
                    let stored = stateHeight
                    let row = try database.statement("SELECT retired, revived, archived FROM history WHERE height = ?").bind(1, stored)
                        .first { ($0.blob(0) ?? [], $0.blob(1) ?? [], $0.blob(2) ?? []) } ?? ([], [], [])
                    try database.statement("INSERT OR REPLACE INTO history (height, retired, revived, archived) VALUES (?, ?, ?, ?)")
                        .bind(1, stored).bind(2, row.0 + revived).bind(3, row.1).bind(4, row.2).run()
                }
                forgetCaches()
                let retiredAt = try retiredHeights()
                for (archived, pages, _) in rows {
                    for key in Self.hashes(archived) {
                        storedKeys.written(key)
                        try database.statement("INSERT OR REPLACE INTO state (key, value) SELECT key, value FROM value_archive WHERE key = ? AND height = ?")
                            .bind(1, key).bind(2, height).run()
                        try database.statement("DELETE FROM value_archive WHERE key = ? AND height = ?").bind(1, key).bind(2, height).run()
                    }
                    for hash in Self.hashes(pages) where retiredAt[hash] == nil {
                        try database.statement("DELETE FROM tree_pages WHERE hash = ?").bind(1, hash).run()
                    }
                }
                try database.execute("DELETE FROM state WHERE key IN (SELECT key FROM state_slice_added)")
                try database.execute("DELETE FROM state_slices")
                try database.execute("DELETE FROM state_slice_added")
                try deleteMeta("state_slicing")
            }
        } catch {
            forgetCaches()
            throw error
        }
        forgetCaches()
    }
}
