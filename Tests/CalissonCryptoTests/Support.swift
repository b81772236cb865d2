import Wire
#if canImport(Glibc)
import Glibc
#endif

func hex(_ string: String) -> [UInt8] { Hex.decode(string)! }

/// A fresh directory under /tmp, removed by the caller with `removeDirectory`.
func temporaryDirectory() -> String {
    var template = Array("/tmp/calisson-test-XXXXXX".utf8CString)
    return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
}

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
