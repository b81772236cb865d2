#include <spawn.h>

// glibc declares these only under _GNU_SOURCE, which Swift's Glibc module does not define;
// both are in glibc 2.34 and later (Debian 12 has 2.36). Used by Sources/Spawning.
int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *actions, int from);
int pipe2(int fds[2], int flags);
