// A certificate's serial number past 64 bits (the 20 random bytes most CA tools write) or
// negative is named without trapping (`ASN1_INTEGER_get` answers -1 for it), distinctly
// from every serial that fits, and a serial that fits is itself (issue 16: a peer's
// certificate is input from outside).
import CalissonTestKit
import COpenSSL
import CalissonCrypto
import Testing
@testable import Transport

@Suite(.onOwnThreads) struct CertificateSerialTests {
    func certificate(withSerialHex hex: String?) throws -> OpaquePointer {
        let key = Ed25519PrivateKey(seed: SHA256.hash("serial test").bytes)!
        let pem = try CertificateAuthority.makeRoot(name: "serial test", key: key, serial: 42).pem
        let x509 = try Certificate.parse(pem)
        if let hex {
            var number: OpaquePointer?
            #expect(BN_hex2bn(&number, hex) > 0)
            defer { BN_free(number) }
            #expect(BN_to_ASN1_INTEGER(number, X509_get_serialNumber(x509)) != nil)
        }
        return x509
    }

    @Test func serialsPast64BitsOrNegativeAreNamedWithoutTrapping() throws {
        let small = try certificate(withSerialHex: nil)
        defer { X509_free(small) }
        #expect(Certificate.serial(of: small) == 42)
        let twentyBytes = "5A0F3C9E21B7D4406E1F8A2B9C3D4E5F60718293"
        let big = try certificate(withSerialHex: twentyBytes), negative = try certificate(withSerialHex: "-" + twentyBytes)
        defer { X509_free(big); X509_free(negative) }
        let bigSerial = Certificate.serial(of: big), negativeSerial = Certificate.serial(of: negative)
        #expect(bigSerial >= 1 << 63 && negativeSerial >= 1 << 63 && bigSerial != negativeSerial)
        #expect(Certificate.serial(of: big) == bigSerial)  // the same certificate, the same name
    }
}
