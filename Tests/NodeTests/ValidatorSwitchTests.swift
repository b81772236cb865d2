// The ledger's bound on how soon the consensus takes a change of the validators up (rules 6:
// nothing added meanwhile, `LedgerLimits.validatorSwitchBlocks`) holds for the consensus's
// schedule with the replica's checkpoint interval and window, whatever the block's height.
import Consensus
import Fixtures
import Ledger
import Testing

@Suite struct ValidatorSwitchTests {
    @Test func theConsensusTakesAChangeUpWithinTheLedgersBound() throws {
        let defaults = ReplicaConfiguration(chainId: "switch", validators: try #require(ValidatorSet([Fixture.key("v").publicKey])))
        let schedule = EpochSchedule(genesis: defaults.validators, checkpointInterval: defaults.checkpointInterval, window: defaults.window)
        let latest = (1...(4 * defaults.checkpointInterval)).map { height in schedule.boundary(executedAt: height) + 1 - height }.max() ?? 0
        // The new set is in force from boundary + 1; the ledger refuses additions up to changedAt + bound.
        #expect(latest <= LedgerLimits.validatorSwitchBlocks, "taken up \(latest) blocks after the change")
        #expect(latest == LedgerLimits.validatorSwitchBlocks, "the bound is the latest, not more: \(latest)")
    }
}
