/// The one place where the order of a replica's actions is decided. The node, the
/// simulator and the ordering benchmark each say how to carry out an action (send on
/// TLS, push into the simulated network, ...); none of them decides in which order, or
/// when the answers an action calls for are fed back: `ReplicaDriver.drive` does.
///
/// The rules, in order of precedence:
/// 1. **Persist before anything else.** The `.persist` records of a step are handed to
///    `persist` together, before the first action of the step that follows them, and
///    those left at the end of a step before the next input is stepped. `persist` must
///    return only once they are durable: a message sent, a block executed or a payload
///    cut after a vote is recorded can never be undone by a crash.
/// 2. **A step's other actions in the order the replica gave them.**
/// 3. **Answers are inputs, first in first out.** An action that calls for an answer
///    (`.requestPayload` → `.payload`, `.execute` → `.executed`) returns it from
///    `perform`; it is stepped after every action of the current step is carried out,
///    after the answers queued before it.
/// 4. **A failure stops the drive.** An error thrown by `persist` or `perform` ends it:
///    nothing after the failed effect is carried out and no queued answer is stepped
///    (the node then stops; a restart rebuilds the replica from what was persisted).
public enum ReplicaDriver {
    /// Steps `input` and every answer it leads to.
    /// - Parameters:
    ///   - step: the replica's transition (`replica.step`).
    ///   - persist: makes safety records durable, in order.
    ///   - perform: carries out any other action; returns the answer it calls for, if any.
    public static func drive(
        _ input: Input, step: (Input) throws -> [Action], persist: ([SafetyRecord]) throws -> Void,
        perform: (Action) throws -> Input?
    ) rethrows {
        var inputs = [input]
        var next = 0
        while next < inputs.count {
            let actions = try step(inputs[next])
            next += 1
            var records: [SafetyRecord] = []
            for action in actions {
                if case let .persist(record) = action {
                    records.append(record)
                    continue
                }
                if !records.isEmpty {
                    try persist(records)
                    records = []
                }
                if let answer = try perform(action) { inputs.append(answer) }
            }
            if !records.isEmpty { try persist(records) }
        }
    }
}
