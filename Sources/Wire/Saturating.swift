/// The rule for arithmetic on numbers that come from outside (a peer, a client, a file, a
/// flag, a governance vote): they are range-checked where they enter, and what is computed
/// from them saturates at the type's bounds instead of trapping. A deadline computed as
/// `height + lifetime` that would pass `UInt64.max` is `UInt64.max`: "never", which is what
/// such a sum means. Docs/SECURITY.md, "Numbers from outside".
extension FixedWidthInteger {
    /// `self + other`, or the type's bound it would pass.
    @inlinable public func saturatingAdding(_ other: Self) -> Self {
        let (sum, overflow) = addingReportingOverflow(other)
        guard overflow else { return sum }
        return other < 0 ? .min : .max
    }

    /// `self × other`, or the type's bound it would pass.
    @inlinable public func saturatingMultiplying(_ other: Self) -> Self {
        let (product, overflow) = multipliedReportingOverflow(by: other)
        guard overflow else { return product }
        return (self < 0) != (other < 0) ? .min : .max
    }
}
