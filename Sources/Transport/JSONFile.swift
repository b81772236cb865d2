import CalissonCrypto
import Foundation
import Wire

/// Why a JSON file (a genesis, a node configuration, a proposal's entry) could not be
/// used: the file, and where the problem is when it is inside (`programmes[2].budget`).
public struct JSONFileError: Error, Equatable, Sendable, CustomStringConvertible {
    public let path: String
    /// The field at fault, empty when the file itself is (missing, not JSON...).
    public let field: String
    public let reason: String
    public var description: String { field.isEmpty ? "\(path): \(reason)" : "\(path): \(field): \(reason)" }

    public init(path: String, field: String, reason: String) {
        self.path = path
        self.field = field
        self.reason = reason
    }
}

/// Reads and decodes a JSON file a person wrote, with errors that say what to fix.
public enum JSONFile {
    /// Genesis and configuration files are kilobytes; 16 MiB is far past any real one.
    public static let byteCountMax = 16 << 20

    public static func decode<T: Decodable>(_ type: T.Type, path: String, byteCountMax: Int = byteCountMax) throws(JSONFileError) -> T {
        let bytes: [UInt8]
        do { bytes = try InputFile.read(path, byteCountMax: byteCountMax) } catch {
            throw JSONFileError(path: path, field: "", reason: error.reason)
        }
        return try decode(type, bytes: bytes, path: path)
    }

    public static func decode<T: Decodable>(_ type: T.Type, bytes: [UInt8], path: String = "<input>") throws(JSONFileError) -> T {
        let data = Data(bytes)
        // The text first, strictly (StrictJSON): where it stops being JSON, and what another
        // parser would read otherwise (a member named twice: Foundation keeps the first).
        let report = StrictJSON.check(bytes)
        if let problem = report.problem {
            throw JSONFileError(path: path, field: problem.field, reason: "not acceptable JSON at byte \(problem.offset): \(problem.fault)")
        }
        do { return try JSONDecoder().decode(T.self, from: data) } catch let error as DecodingError {
            let (field, reason) = error.fieldAndReason
            if let explained = StrictJSON.explain(error, numbers: report.numbers) {
                throw JSONFileError(path: path, field: "", reason: explained)
            }
            throw JSONFileError(path: path, field: field, reason: reason)
        } catch {
            throw JSONFileError(path: path, field: "", reason: "\(error)")
        }
    }
}
