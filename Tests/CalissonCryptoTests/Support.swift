import CalissonTestKit
import Wire
#if canImport(Glibc)
import Glibc
#endif

func hex(_ string: String) -> [UInt8] { Hex.decode(string)! }

/// A fresh directory in the test process's scratch (Scratch, removed at exit; the caller
/// may remove it sooner with `removeDirectory`).
func temporaryDirectory() -> String { Scratch.directory("crypto") }

func removeDirectory(_ path: String) {
    if let dir = opendir(path) {
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { unlink("\(path)/\(name)") }
        }
        closedir(dir)
    }
    rmdir(path)
}
