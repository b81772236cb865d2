/// PEM armour (RFC 7468) and the fixed DER forms of Ed25519 keys (RFC 8410), so key
/// files interoperate with OpenSSL: `openssl genpkey -algorithm ed25519` writes a file
/// Calisson reads, and `openssl pkey -pubout` reads the files Calisson writes.
enum PEM {
    static let privateKeyLabel = "PRIVATE KEY"
    static let publicKeyLabel = "PUBLIC KEY"
    /// PKCS#8 OneAsymmetricKey v1 for Ed25519, before the 32-byte seed.
    static let privateKeyDERPrefix: [UInt8] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ]
    /// SubjectPublicKeyInfo for Ed25519, before the 32-byte key.
    static let publicKeyDERPrefix: [UInt8] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ]

    static func armour(label: String, der: [UInt8]) -> String {
        let body = Base64.encode(der)
        var lines = ["-----BEGIN \(label)-----"]
        var index = body.startIndex
        while index < body.endIndex {
            let end = body.index(index, offsetBy: 64, limitedBy: body.endIndex) ?? body.endIndex
            lines.append(String(body[index..<end]))
            index = end
        }
        lines.append("-----END \(label)-----")
        return lines.joined(separator: "\n") + "\n"
    }

    enum ParseError: Error, Equatable {
        case noBlock(label: String)
        case badBase64
    }

    /// The DER bytes of the first block with `label`.
    static func dearmour(_ text: String, label: String) throws(ParseError) -> [UInt8] {
        let begin = "-----BEGIN \(label)-----", end = "-----END \(label)-----"
        guard let start = find(begin, in: text, from: text.startIndex), let stop = find(end, in: text, from: start.upperBound)
        else { throw .noBlock(label: label) }
        guard let der = Base64.decode(String(text[start.upperBound..<stop.lowerBound])) else { throw .badBase64 }
        return der
    }
}

/// The first occurrence of `needle` in `text` at or after `from`.
private func find(_ needle: String, in text: String, from: String.Index) -> Range<String.Index>? {
    var index = from
    while index < text.endIndex {
        if text[index...].starts(with: needle) { return index..<text.index(index, offsetBy: needle.count) }
        index = text.index(after: index)
    }
    return nil
}

/// Standard base64 (RFC 4648, with padding); whitespace is ignored when decoding.
enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var index = 0
        while index < bytes.count {
            let b0 = UInt32(bytes[index])
            let b1 = index + 1 < bytes.count ? UInt32(bytes[index + 1]) : 0
            let b2 = index + 2 < bytes.count ? UInt32(bytes[index + 2]) : 0
            let group = b0 << 16 | b1 << 8 | b2
            out.append(alphabet[Int(group >> 18 & 63)])
            out.append(alphabet[Int(group >> 12 & 63)])
            out.append(index + 1 < bytes.count ? alphabet[Int(group >> 6 & 63)] : UInt8(ascii: "="))
            out.append(index + 2 < bytes.count ? alphabet[Int(group & 63)] : UInt8(ascii: "="))
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        var values: [UInt8] = []
        var padding = 0
        for c in text.utf8 {
            switch c {
            case UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"): continue
            case UInt8(ascii: "="): padding += 1; continue
            default: break
            }
            guard padding == 0, let value = sextet(c) else { return nil }
            values.append(value)
        }
        guard (values.count + padding) % 4 == 0, padding <= 2 else { return nil }
        var out: [UInt8] = []
        var index = 0
        while index < values.count {
            let chunk = values[index..<min(index + 4, values.count)]
            var group: UInt32 = 0
            for (offset, value) in chunk.enumerated() { group |= UInt32(value) << (18 - 6 * offset) }
            out.append(UInt8(group >> 16 & 0xff))
            if chunk.count > 2 { out.append(UInt8(group >> 8 & 0xff)) }
            if chunk.count > 3 { out.append(UInt8(group & 0xff)) }
            guard chunk.count > 1 else { return nil }
            index += 4
        }
        return out
    }

    private static func sextet(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return c - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return c - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): return 62
        case UInt8(ascii: "/"): return 63
        default: return nil
        }
    }
}
