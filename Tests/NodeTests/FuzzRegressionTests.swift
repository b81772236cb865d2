// What the fuzz targets (Tests/Fuzz) found, kept as tests: each input that broke a
// property, and the property it broke.
import CalissonTestKit
import CalissonCrypto
import LightClient
import Testing
import Wire

@Suite(.onOwnThreads) struct FuzzRegressionTests {
    /// fuzz-client: a `blocks` request asking for more than `blocksMax` decoded to the
    /// clamped value, so it re-encoded to other bytes (one value, two encodings). The
    /// codec now keeps what the client sent; the node serves `bounded`.
    @Test func clientRequestLimitsDecodeAsSentAndAreBoundedBySeparately() throws {
        let bytes = Hex.decode("0800000000000000010001000a00000064")!
        let request = try ClientRequest(wireBytes: bytes)
        #expect(request == .blocks(from: 1, limit: 0x0001_000a, waitMilliseconds: 100))
        #expect(request.wireBytes == bytes)
        #expect(request.bounded == .blocks(from: 1, limit: ClientRequest.blocksMax, waitMilliseconds: 100))
        let waiting = ClientRequest.waitFinal(Bytes32([UInt8](repeating: 1, count: 32))!, timeoutMilliseconds: .max)
        #expect(try ClientRequest(wireBytes: waiting.wireBytes) == waiting)
        #expect(waiting.bounded == .waitFinal(Bytes32([UInt8](repeating: 1, count: 32))!, timeoutMilliseconds: ClientRequest.waitMillisecondsMax))
        let listing = ClientRequest.accountTransactions(Bytes32([UInt8](repeating: 2, count: 32))!, limit: 5_000)
        #expect(listing.bounded == .accountTransactions(Bytes32([UInt8](repeating: 2, count: 32))!, limit: ClientRequest.accountTransactionsMax))
    }
}
