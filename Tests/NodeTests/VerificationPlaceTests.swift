// Where the node verifies a set of signature checks: on its loop while that is cheaper
// than the verifier's round trip, by the verifier under load or once anything is out there.
import Node
import Testing

@Suite struct VerificationPlaceTests {
    /// Whether a set of `count` checks, `uncached` of them not in the cache, goes on the loop.
    private func onLoop(_ place: inout VerificationPlace, _ count: Int, uncached: Int) -> Bool {
        place.onLoop(count: count, uncached: { uncached })
    }

    @Test func aFewChecksGoOnTheLoopUntilTheTurnsBudgetIsSpent() {
        var place = VerificationPlace()
        // Lone checks not in the cache: on the loop, up to the turn's budget.
        for _ in 0..<VerificationPlace.uncachedPerTurnMax {
            let taken = onLoop(&place, 1, uncached: 1)
            #expect(taken)
        }
        #expect(place.thisTurn == VerificationPlace.uncachedPerTurnMax)
        let pastBudget = onLoop(&place, 1, uncached: 1)
        #expect(!pastBudget)  // under load: to the verifier, on every core
        place.turnEnded()
        let nextTurn = onLoop(&place, 1, uncached: 1)
        #expect(nextTurn)
        // Checks the cache vouches for cost nothing and spend none of the budget.
        place.turnEnded()
        let cached = (0..<100).allSatisfy { _ in onLoop(&place, 200, uncached: 0) }
        #expect(cached && place.thisTurn == 0)
    }

    @Test func largeSetsAndManyUncachedChecksGoToTheVerifier() {
        var place = VerificationPlace()
        var asked = false
        let large = place.onLoop(count: VerificationPlace.checksMax + 1, uncached: { asked = true; return 0 })
        #expect(!large && !asked)  // the cache is not asked when the set is too large anyway
        let manyUncached = onLoop(&place, 10, uncached: VerificationPlace.uncachedMax + 1)
        #expect(!manyUncached)
        let few = onLoop(&place, 10, uncached: VerificationPlace.uncachedMax)
        #expect(few && place.thisTurn == VerificationPlace.uncachedMax)
    }

    @Test func nothingOvertakesWhatIsOutAtTheVerifier() {
        var place = VerificationPlace()
        place.handedOut()
        place.handedOut()
        let whileTwoOut = onLoop(&place, 1, uncached: 0)
        #expect(!whileTwoOut)
        place.handedBack()  // the first item's outcome runs: the second still waits
        let whileOneOut = onLoop(&place, 1, uncached: 0)
        #expect(!whileOneOut)
        place.handedBack()
        let idle = onLoop(&place, 1, uncached: 1)
        #expect(place.out == 0 && idle)
    }
}
