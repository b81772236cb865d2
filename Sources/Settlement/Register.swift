import CalissonCrypto
import Foundation
import Ledger
import Transport

/// The treasury's settlement register: who each partner is for the bank (legal name, IBAN,
/// BIC, and a direct-debit mandate where one was signed). Off chain on purpose: bank
/// details are the Métropole's business, not the consortium's state (Docs/SETTLEMENT.md).
/// Decoded from JSON, then `validated()`, which names the field of every problem.
public struct RegisterFile: Codable, Sendable, Equatable {
    /// The Métropole: it pays partners owed a positive net and collects from the others.
    public var payer: Payer
    public var partners: [Entry]

    public init(payer: Payer, partners: [Entry]) {
        self.payer = payer
        self.partners = partners
    }

    public struct Payer: Codable, Sendable, Equatable {
        /// Its partner id on chain (the authority).
        public var partner: String
        public var legalName: String
        public var iban: String
        public var bic: String
        /// Its SEPA creditor identifier (ICS), needed to collect by direct debit.
        public var creditorId: String?

        public init(partner: String, legalName: String, iban: String, bic: String, creditorId: String? = nil) {
            self.partner = partner
            self.legalName = legalName
            self.iban = iban
            self.bic = bic
            self.creditorId = creditorId
        }
    }

    public struct Entry: Codable, Sendable, Equatable {
        public var partner: String
        public var legalName: String
        public var iban: String
        public var bic: String
        /// A SEPA Core direct-debit mandate the partner signed, if any.
        public var mandate: Mandate?

        public init(partner: String, legalName: String, iban: String, bic: String, mandate: Mandate? = nil) {
            self.partner = partner
            self.legalName = legalName
            self.iban = iban
            self.bic = bic
            self.mandate = mandate
        }
    }

    public struct Mandate: Codable, Sendable, Equatable {
        public var id: String
        /// YYYY-MM-DD.
        public var signedOn: String

        public init(id: String, signedOn: String) {
            self.id = id
            self.signedOn = signedOn
        }
    }

    /// A register file is small: a few hundred partners.
    public static let byteCountMax = 1 << 20

    public static func load(_ path: String) throws(RegisterError) -> SettlementRegister {
        let data: Data
        do { data = Data(try InputFile.read(path, byteCountMax: byteCountMax)) } catch {
            if case .tooLarge = error { throw RegisterError(field: path, reason: "over \(byteCountMax) bytes") }
            throw RegisterError(field: path, reason: "cannot be read: \(error.reason)")
        }
        // Read strictly first (StrictJSON): a partner listed with two `iban` members was read
        // with the first, where another tool reading the same file would pay the second.
        let report = StrictJSON.check(data)
        if let problem = report.problem { throw RegisterError(field: path, reason: "not a settlement register: \(problem)") }
        let file: RegisterFile
        do { file = try JSONDecoder().decode(RegisterFile.self, from: data) } catch {
            let explained = (error as? DecodingError).flatMap { StrictJSON.explain($0, numbers: report.numbers) }
            throw RegisterError(field: path, reason: "not a settlement register: \(explained ?? Self.describe(error))")
        }
        return try file.validated()
    }

    static func describe(_ error: any Error) -> String {
        switch error as? DecodingError {
        case let .keyNotFound(key, context)?: return "\((context.codingPath + [key]).map(\.stringValue).joined(separator: ".")) is missing"
        case let .typeMismatch(_, context)?, let .valueNotFound(_, context)?, let .dataCorrupted(context)?:
            return "\(context.codingPath.map(\.stringValue).joined(separator: ".")): \(context.debugDescription)"
        default: return "\(error)"
        }
    }

    /// The register checked: ids well formed and distinct, each IBAN (structure, SEPA
    /// country length, mod-97), BIC, creditor identifier and mandate valid, names
    /// expressible in the SEPA character set within its 70 characters.
    public func validated() throws(RegisterError) -> SettlementRegister {
        guard partners.count <= LedgerLimits.listCountMax else {
            throw RegisterError(field: "partners", reason: "at most \(LedgerLimits.listCountMax) partners")
        }
        let payerID = try Self.identifier(payer.partner, "payer.partner")
        let payerParty = try SettlementRegister.Party(
            partner: payerID, legalName: SEPAText.name(payer.legalName, "payer.legalName"),
            iban: IBAN.validated(payer.iban, "payer.iban"), bic: BIC.validated(payer.bic, "payer.bic"), mandate: nil)
        let creditorId = try payer.creditorId.map { (raw: String) throws(RegisterError) in try CreditorIdentifier.validated(raw, "payer.creditorId") }
        var parties: [Identifier: SettlementRegister.Party] = [:]
        for (index, entry) in partners.enumerated() {
            let field = "partners[\(index)]"
            let id = try Self.identifier(entry.partner, "\(field).partner")
            guard parties[id] == nil, id != payerID else { throw RegisterError(field: "\(field).partner", reason: "\(id) is listed twice") }
            var mandate: SettlementRegister.Mandate?
            if let raw = entry.mandate {
                guard creditorId != nil else {
                    throw RegisterError(field: "\(field).mandate", reason: "a mandate needs the payer's creditorId (to collect, the Métropole needs its SEPA creditor identifier)")
                }
                mandate = .init(id: try SEPAText.identifier(raw.id, "\(field).mandate.id"), signedOn: try SEPADate.validated(raw.signedOn, "\(field).mandate.signedOn"))
            }
            parties[id] = .init(
                partner: id, legalName: try SEPAText.name(entry.legalName, "\(field).legalName"), iban: try IBAN.validated(entry.iban, "\(field).iban"),
                bic: try BIC.validated(entry.bic, "\(field).bic"), mandate: mandate)
        }
        return SettlementRegister(payer: payerParty, creditorId: creditorId, parties: parties)
    }

    static func identifier(_ raw: String, _ field: String) throws(RegisterError) -> Identifier {
        guard let id = Identifier(raw) else { throw RegisterError(field: field, reason: "'\(raw)' is not a partner id (1 to 32 of a-z, 0-9, '-')") }
        return id
    }
}

/// A register checked and ready to pay from.
public struct SettlementRegister: Sendable, Equatable {
    public let payer: Party
    public let creditorId: String?
    public let parties: [Identifier: Party]

    public struct Party: Sendable, Equatable {
        public let partner: Identifier
        /// In the SEPA character set (accents removed), at most 70 characters.
        public let legalName: String
        public let iban: String
        public let bic: String
        public let mandate: Mandate?
    }

    public struct Mandate: Sendable, Equatable {
        public let id: String
        public let signedOn: String
    }
}

/// A mistake in the register, naming its field.
public struct RegisterError: Error, Equatable, Sendable, CustomStringConvertible {
    public let field: String
    public let reason: String
    public var description: String { "\(field): \(reason)" }
}

// MARK: Bank identifiers

public enum IBAN {
    /// IBAN lengths of the SEPA countries (EPC list of countries in the SEPA schemes).
    static let lengths: [String: Int] = [
        "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18,
        "FR": 27, "GB": 22, "GI": 23, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20,
        "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
        "VA": 22,
    ]

    /// The IBAN in its electronic form (no spaces, upper case), or why it is not one.
    public static func validated(_ raw: String, _ field: String) throws(RegisterError) -> String {
        let iban = String(raw.filter { $0 != " " }.uppercased())
        guard iban.count >= 15, iban.count <= 34, iban.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else {
            throw RegisterError(field: field, reason: "an IBAN is 15 to 34 letters and digits")
        }
        let country = String(iban.prefix(2))
        guard country.allSatisfy(\.isLetter), iban.dropFirst(2).prefix(2).allSatisfy(\.isNumber) else {
            throw RegisterError(field: field, reason: "an IBAN starts with a country code and two check digits")
        }
        guard let length = lengths[country] else { throw RegisterError(field: field, reason: "\(country) is not a country of the SEPA schemes") }
        guard iban.count == length else { throw RegisterError(field: field, reason: "a \(country) IBAN has \(length) characters, not \(iban.count)") }
        guard mod97(iban.dropFirst(4) + iban.prefix(4)) == 1 else {
            throw RegisterError(field: field, reason: "the check digits do not match (ISO 13616 mod-97): a typing mistake?")
        }
        return iban
    }

    /// ISO 7064 mod 97-10 over letters-as-numbers (A = 10 … Z = 35), digit by digit; −1
    /// for a character that is neither an ASCII digit nor an upper-case letter.
    static func mod97(_ text: some StringProtocol) -> Int {
        var remainder = 0
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): remainder = (remainder * 10 + Int(byte - UInt8(ascii: "0"))) % 97
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): remainder = (remainder * 100 + Int(byte - UInt8(ascii: "A")) + 10) % 97
            default: return -1
            }
        }
        return remainder
    }

    /// The two check digits for a country and BBAN.
    static func checkDigits(country: String, bban: String) -> String {
        let digits = 98 - mod97(bban + country + "00")
        return digits < 10 ? "0\(digits)" : "\(digits)"
    }

    /// A French IBAN from a RIB (bank, branch, account number), its RIB key computed:
    /// `calisson-node testnet` writes fictitious ones that pass every check.
    public static func french(bank: String, branch: String, account: String) -> String {
        // RIB key: 97 − (89·bank + 15·branch + 3·account) mod 97, the account's letters
        // replaced by digits (A–I 1–9, J–R 1–9, S–Z 2–9).
        let numeric = String(account.utf8.map { byte -> Character in
            guard byte >= UInt8(ascii: "A"), byte <= UInt8(ascii: "Z") else { return Character(Unicode.Scalar(byte)) }
            let offset = byte - UInt8(ascii: "A")
            return Character(String(offset < 9 ? offset + 1 : offset < 18 ? offset - 8 : offset - 16))
        })
        func mod(_ digits: String) -> Int { digits.reduce(0) { ($0 * 10 + ($1.wholeNumberValue ?? 0)) % 97 } }
        let key = 97 - (89 * mod(bank) + 15 * mod(branch) + 3 * mod(numeric)) % 97
        let bban = bank + branch + account + (key < 10 ? "0\(key)" : "\(key)")
        return "FR" + checkDigits(country: "FR", bban: bban) + bban
    }
}

public enum BIC {
    /// A BIC (ISO 9362) as pain.001.001.09 takes it: 4 letters or digits (institution),
    /// 2 letters (country), 2 letters or digits (location), optionally 3 (branch).
    public static func validated(_ raw: String, _ field: String) throws(RegisterError) -> String {
        let bic = raw.uppercased()
        let characters = Array(bic)
        let alphanumeric = { (c: Character) in c.isASCII && (c.isLetter || c.isNumber) }
        guard characters.count == 8 || characters.count == 11, characters.allSatisfy(alphanumeric),
              characters[4].isLetter, characters[5].isLetter
        else { throw RegisterError(field: field, reason: "a BIC is 8 or 11 letters and digits, its 5th and 6th a country code") }
        return bic
    }
}

public enum CreditorIdentifier {
    /// A SEPA creditor identifier: country, two check digits, a 3-character business code
    /// (not checked), the national identifier; the check digits are mod-97 over the
    /// national identifier, the country and "00".
    public static func validated(_ raw: String, _ field: String) throws(RegisterError) -> String {
        let id = String(raw.filter { $0 != " " }.uppercased())
        guard id.count >= 8, id.count <= 35, id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }),
              id.prefix(2).allSatisfy(\.isLetter), id.dropFirst(2).prefix(2).allSatisfy(\.isNumber)
        else { throw RegisterError(field: field, reason: "a creditor identifier is a country code, two check digits, a business code and a national id") }
        let national = id.dropFirst(7)
        guard IBAN.mod97(national + id.prefix(4)) == 1 else { throw RegisterError(field: field, reason: "the check digits do not match (mod-97)") }
        return id
    }

    public static func make(country: String, business: String, national: String) -> String {
        country + IBAN.checkDigits(country: country, bban: national) + business + national
    }
}

// MARK: SEPA text

enum SEPAText {
    /// The characters every SEPA bank takes (EPC guidelines, the Latin character set).
    static func allowed(_ scalar: Unicode.Scalar) -> Bool {
        scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || "/-?:().,'+ ".unicodeScalars.contains(scalar))
    }

    /// A name in the SEPA character set: accents removed, other characters replaced by
    /// spaces; refused when empty or over 70 characters (the EPC's limit for a name).
    static func name(_ raw: String, _ field: String) throws(RegisterError) -> String {
        let text = transliterated(raw)
        guard !text.isEmpty else { throw RegisterError(field: field, reason: "empty (or nothing left in the SEPA character set)") }
        guard text.count <= 70 else { throw RegisterError(field: field, reason: "over 70 characters, the SEPA limit for a name") }
        return text
    }

    static func transliterated(_ raw: String) -> String {
        var scalars = String.UnicodeScalarView()
        for scalar in raw.decomposedStringWithCanonicalMapping.unicodeScalars {
            if scalar.properties.generalCategory == .nonspacingMark { continue }
            scalars.append(allowed(scalar) ? scalar : " ")
        }
        return String(scalars).split(separator: " ").joined(separator: " ")
    }

    /// An identifier (mandate): 1 to 35 characters of the SEPA set without spaces, not
    /// starting or ending with '/', without "//".
    static func identifier(_ raw: String, _ field: String) throws(RegisterError) -> String {
        guard !raw.isEmpty, raw.count <= 35, raw.unicodeScalars.allSatisfy({ allowed($0) && $0 != " " }),
              !raw.hasPrefix("/"), !raw.hasSuffix("/"), !raw.contains("//")
        else { throw RegisterError(field: field, reason: "1 to 35 of A-Z a-z 0-9 / - ? : ( ) . , ' + (no space, no leading, trailing or double '/')") }
        return raw
    }
}

enum SEPADate {
    /// A calendar date written YYYY-MM-DD.
    static func validated(_ raw: String, _ field: String) throws(RegisterError) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd"
        guard raw.count == 10, let date = formatter.date(from: raw), formatter.string(from: date) == raw else {
            throw RegisterError(field: field, reason: "a date written YYYY-MM-DD, not '\(raw)'")
        }
        return raw
    }
}
