/// Why a byte string is not the canonical encoding of the value asked for.
///
/// Every case names the field being decoded and the byte offset at which decoding
/// stopped, so a rejection can be logged with enough context to find the bad input.
public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The input ended inside `field`: `needed` bytes were required at `offset`.
    case truncated(field: String, offset: Int, needed: Int, available: Int)
    /// A length or count prefix is larger than the field allows.
    case lengthExceedsMaximum(field: String, offset: Int, length: UInt64, maximum: Int)
    /// Bytes remain after the value ended.
    case trailingBytes(offset: Int, count: Int)
    /// A kind, tag or discriminant that this version does not know.
    case unknownKind(field: String, offset: Int, raw: UInt64)
    /// A protocol or format version outside the supported range.
    case unsupportedVersion(field: String, offset: Int, version: UInt64, supported: ClosedRange<UInt64>)
    /// A value that decodes but breaks a rule: a non-canonical boolean, invalid UTF-8,
    /// unsorted keys, a number out of range.
    case invalidValue(field: String, offset: Int, reason: String)

    public var description: String {
        switch self {
        case let .truncated(field, offset, needed, available):
            return "\(field): truncated at byte \(offset): needed \(needed) bytes, \(available) available"
        case let .lengthExceedsMaximum(field, offset, length, maximum):
            return "\(field): length \(length) at byte \(offset) exceeds the maximum \(maximum)"
        case let .trailingBytes(offset, count):
            return "\(count) trailing bytes after the value ended at byte \(offset)"
        case let .unknownKind(field, offset, raw):
            return "\(field): unknown kind \(raw) at byte \(offset)"
        case let .unsupportedVersion(field, offset, version, supported):
            return "\(field): version \(version) at byte \(offset) is not in \(supported)"
        case let .invalidValue(field, offset, reason):
            return "\(field): invalid value at byte \(offset): \(reason)"
        }
    }
}
