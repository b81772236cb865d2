import Wire

/// The filter of the stored state's keys: most of a node's reads of the state table are of
/// keys it does not hold (a transaction's used-nonce record, looked up at admission and
/// again at execution; an attribution's evidence), each a descent of the table's B-tree to
/// a leaf page that the page cache rarely holds once the state outgrows it. A Bloom filter
/// (`KeyFilter`) over the keys answers most of them from memory (Docs/STORAGE.md, "The
/// filter of the state's keys").
///
/// Guarantee: the filter never says "absent" for a key the table holds. Every statement
/// that puts a key in the table inserts it in the filter first; a deleted key stays in it.
/// A transaction that fails is forgotten with the filter (`forgetCaches`): its rollback may
/// bring back a key that a scan step inside it did not see (deleted by the transaction),
/// and the filter is then built again from the table.
///
/// The filter is built by scanning the table in key order, a step at a time
/// (`advanceKeyFilter`, once per tick of the node's clock, so that no turn of its loop reads
/// the whole table), a key written meanwhile being inserted as it is written; until it is
/// complete every read goes to the table. Once half its bits are set (deleted
/// keys stay in it), a filter twice the size is built the same way beside it, and replaces
/// it when complete. Only a writing store has one: another process writes a read-only
/// store's file.
struct StoredKeys {
    /// The filter in use (nil: none complete yet).
    private(set) var ready: KeyFilter?
    /// The one being built: the keys scanned so far (up to `after`) and those written since
    /// the scan began.
    private(set) var building: (filter: KeyFilter, after: [UInt8]?)?
    /// Reads of keys the filter said absent, answered without the table.
    private(set) var readsSkipped = 0

    /// Keys a first filter is made for (1.25 MiB); it grows as needed.
    var capacityMin = 1 << 20
    /// Past this share of bits set, a larger filter is built (about 0.8% false positives).
    static let fillMax = 0.5

    /// Drops the filters (a transaction failed): every read goes to the table until one is
    /// built again.
    mutating func forget() {
        ready = nil
        building = nil
    }

    mutating func written(_ key: Bytes32) {
        ready?.insert(key)
        building?.filter.insert(key)
    }

    /// Whether the table may hold `key` (false: it does not).
    mutating func mayContain(_ key: Bytes32) -> Bool {
        guard let ready, !ready.mayContain(key) else { return true }
        readsSkipped += 1
        return false
    }

    /// Whether a filter is being built, starting one if none is complete or the one in use
    /// is full.
    mutating func needsBuilding() -> Bool {
        if building != nil { return true }
        if let ready {
            let capacity = capacity(forKeys: ready.estimatedKeys)
            guard ready.fill > Self.fillMax, capacity > ready.capacity else { return false }
            building = (KeyFilter(capacity: capacity), nil)
        } else {
            building = (KeyFilter(capacity: capacityMin), nil)
        }
        return true
    }

    /// Keys scanned (`rows`, in key order, from after the last step's last key); `complete`
    /// when the scan reached the table's end. A row that is not a 32-byte key is skipped (no
    /// read can ask for it). A filter that fills past `fillMax` before its scan ends starts
    /// again, about four times larger (at `capacityMax`, it goes on, fuller).
    mutating func scanned(_ rows: [[UInt8]], complete: Bool) {
        guard var building else { return }
        for row in rows { if let key = Bytes32(row) { building.filter.insert(key) } }
        building.after = rows.last ?? building.after
        let larger = capacity(forKeys: building.filter.estimatedKeys.multipliedReportingOverflow(by: 2).partialValue)
        if building.filter.fill > Self.fillMax, larger > building.filter.capacity {
            self.building = (KeyFilter(capacity: larger), nil)
        } else if complete {
            ready = building.filter
            self.building = nil
        } else {
            self.building = building
        }
    }

    /// Keys a filter is made for at most (160 MiB, for a state of a hundred million keys
    /// and more: past that, false positives grow, reads stay right).
    static let capacityMax = 1 << 27

    private func capacity(forKeys keys: Int) -> Int { min(Self.capacityMax, max(capacityMin, keys.multipliedReportingOverflow(by: 2).overflow ? Self.capacityMax : 2 * keys)) }
}

extension NodeStore {
    /// Keys scanned per step of the filter's build (a few milliseconds).
    public static let keyFilterStepKeys = 8_192

    /// One step of building the filter of the state's keys, if one is due: the next
    /// `keyFilterStepKeys` keys of the table in key order. A writing store's owner calls it
    /// regularly (the node: once per tick); without it every read of a key goes to the table.
    public func advanceKeyFilter(keys limit: Int = keyFilterStepKeys) throws(StorageError) {
        guard !isReadOnly, storedKeys.needsBuilding(), let after = storedKeys.building.map({ $0.after }) else { return }
        let rows: [[UInt8]]
        if let after {
            rows = try database.statement("SELECT key FROM state WHERE key > ? ORDER BY key LIMIT ?").bind(1, after).bind(2, limit)
                .all { $0.blob(0) ?? [] }
        } else {
            rows = try database.statement("SELECT key FROM state ORDER BY key LIMIT ?").bind(1, limit).all { $0.blob(0) ?? [] }
        }
        storedKeys.scanned(rows, complete: rows.count < limit)
    }

    /// The filter's state, for the node's metrics: whether one is in use, its share of bits
    /// set, and the reads it answered.
    public var keyFilterStatus: (ready: Bool, fill: Double, readsSkipped: Int) {
        (storedKeys.ready != nil, storedKeys.ready?.fill ?? 0, storedKeys.readsSkipped)
    }
}
