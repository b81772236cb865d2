// Proves the system-library shims import and link, and that the installed versions are
// at least those Calisson is built and tested against.
import CLibUV
import COpenSSL
import CSQLite
import CSodium
import Testing

@Suite struct SystemLibraryTests {
    @Test func libuvIsAtLeast1_44() {
        #expect(uv_version() >= 0x01_2c_00, "libuv \(String(cString: uv_version_string()))")
    }

    @Test func openSSLIsAtLeast3_0() {
        #expect(OpenSSL_version_num() >= 0x3000_0000)
    }

    @Test func sqliteIsAtLeast3_35AndThreadSafe() {
        #expect(sqlite3_libversion_number() >= 3_035_000)
        #expect(sqlite3_threadsafe() != 0)
    }

    @Test func libsodiumInitialises() {
        #expect(sodium_init() >= 0)
        #expect(crypto_sign_bytes() == 64)
    }
}
