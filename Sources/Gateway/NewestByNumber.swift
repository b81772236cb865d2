/// Values by number (an epoch's report, a block by its height), the highest numbers kept:
/// at most `countMax`, and at most `bytesMax` bytes (as the caller estimates each) but for
/// the one just inserted, which is kept whatever its size.
struct NewestByNumber<Value> {
    private var values: [UInt64: (value: Value, bytes: Int)] = [:]
    private(set) var bytes = 0
    let countMax: Int, bytesMax: Int

    init(countMax: Int, bytesMax: Int) {
        self.countMax = countMax
        self.bytesMax = bytesMax
    }

    var count: Int { values.count }
    subscript(number: UInt64) -> Value? { values[number]?.value }

    /// Keeps `value` of `bytes` for `number`, and forgets the lowest others past the bounds.
    mutating func insert(_ value: Value, for number: UInt64, bytes size: Int) {
        if let old = values.updateValue((value, size), forKey: number) { bytes -= old.bytes }
        bytes += size
        while values.count > countMax || (bytes > bytesMax && values.count > 1),
            let oldest = values.keys.filter({ $0 != number }).min() {
            bytes -= values.removeValue(forKey: oldest)?.bytes ?? 0
        }
    }

    /// Forgets `number`'s value (one found not to hold after all).
    mutating func remove(_ number: UInt64) {
        bytes -= values.removeValue(forKey: number)?.bytes ?? 0
    }
}
