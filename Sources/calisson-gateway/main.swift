import ArgumentParser
import Gateway

// The server's event loops run every task (GatewayServer.runTasksOnEventLoops): installed
// here, on the main thread, before the command's first task; then the command runs as
// `@main` runs it (from an async function, where its async `main` is the one chosen).
func runCommand() async { await CalissonGateway.main() }
GatewayServer.runTasksOnEventLoops()
await runCommand()
