// The query and submit CLI: its commands are in the CalissonCLI module.
import CalissonCLI

Calisson.main()
