/// Decoding helpers for files people write (the genesis, a node's configuration, a
/// proposal's programme): an integer that does not fit its field (negative, fractional,
/// past the type's maximum) and a list longer than its bound are errors naming the field
/// and what it takes, thrown while decoding, before anything is built from the value.
/// (Foundation's JSONDecoder reports such a number as "not valid JSON" with no field;
/// a 100,000-entry list would be decoded whole before a later check refused it.)
extension KeyedDecodingContainer {
    public func integer<T: FixedWidthInteger & Decodable>(_ key: Key, as type: T.Type = T.self) throws -> T {
        guard contains(key) else { return try decode(T.self, forKey: key) }  // keyNotFound, as usual
        do { return try decode(T.self, forKey: key) } catch { throw outOfRange(T.self, key) }
    }

    public func integerIfPresent<T: FixedWidthInteger & Decodable>(_ key: Key, as type: T.Type = T.self) throws -> T? {
        guard contains(key), try !decodeNil(forKey: key) else { return nil }
        return try integer(key, as: T.self)
    }

    /// A list of at most `countMax` elements, refused at element `countMax + 1`.
    public func list<T: Decodable>(_ type: T.Type, _ key: Key, countMax: Int) throws -> [T] {
        var container = try nestedUnkeyedContainer(forKey: key)
        var elements: [T] = []
        while !container.isAtEnd {
            guard elements.count < countMax else {
                throw DecodingError.dataCorrupted(.init(codingPath: codingPath + [key], debugDescription: "more than \(countMax) entries"))
            }
            elements.append(try container.decode(T.self))
        }
        return elements
    }

    public func listIfPresent<T: Decodable>(_ type: T.Type, _ key: Key, countMax: Int) throws -> [T]? {
        guard contains(key), try !decodeNil(forKey: key) else { return nil }
        return try list(T.self, key, countMax: countMax)
    }

    private func outOfRange<T: FixedWidthInteger>(_ type: T.Type, _ key: Key) -> DecodingError {
        .dataCorrupted(.init(codingPath: codingPath + [key], debugDescription: "not a whole number from \(T.min) to \(T.max)"))
    }
}

/// A member name of any spelling: to list the members an object has.
public struct AnyMemberKey: CodingKey {
    public let stringValue: String
    public let intValue: Int? = nil
    public init(stringValue: String) { self.stringValue = stringValue }
    public init?(intValue: Int) { nil }
}

extension Decoder {
    /// Refuses an object with a member `Keys` does not name, naming it: a misspelt field
    /// (`retainBlock`) would otherwise be ignored and its default taken without a word.
    public func refuseUnknownMembers<Keys: CodingKey>(_ keys: Keys.Type) throws {
        let container = try container(keyedBy: AnyMemberKey.self)
        if let unknown = container.allKeys.sorted(by: { $0.stringValue < $1.stringValue }).first(where: { Keys(stringValue: $0.stringValue) == nil }) {
            throw DecodingError.dataCorrupted(.init(
                codingPath: codingPath + [unknown], debugDescription: "no such field (misspelt? it would be ignored, its default taken)"))
        }
    }
}

extension DecodingError {
    /// Where the error is (`programmes[2].budget`) and what is wrong, in words.
    public var fieldAndReason: (field: String, reason: String) {
        func path(_ keys: [any CodingKey]) -> String {
            var text = ""
            for key in keys {
                if let index = key.intValue { text += "[\(index)]" } else { text += text.isEmpty ? key.stringValue : ".\(key.stringValue)" }
            }
            return text
        }
        switch self {
        case let .keyNotFound(key, context): return (path(context.codingPath + [key]), "missing")
        case let .valueNotFound(_, context): return (path(context.codingPath), "null where a value is needed")
        case let .typeMismatch(type, context): return (path(context.codingPath), "wrong type (expected \(Self.kind(type)))")
        case let .dataCorrupted(context): return (path(context.codingPath), context.debugDescription)
        @unknown default: return ("", "\(self)")
        }
    }

    private static func kind(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Bool.Type: return "true or false"
        case is any FixedWidthInteger.Type: return "a whole number"
        case is any BinaryFloatingPoint.Type: return "a number"
        // Before lists: a dictionary is a sequence too (of its pairs).
        case is any ExpressibleByDictionaryLiteral.Type: return "an object"
        case is any Sequence.Type: return "a list"
        default: return "an object"
        }
    }
}
