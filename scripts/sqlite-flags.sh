# shellcheck shell=bash
# The SQLite the agent compiles in (its edge store) on the firmware builds: sourced by
# cross-build.sh, and by test-arm.sh so the ARM test suites run the SQLite the boards run.
# - Left out, as the agent never uses them: full-text search, R-trees, JSON, the statistics
#   and dbstat tables, loading extensions, shared cache, deprecated and progress APIs.
#   -307 KB of the aarch64 binary.
# - Memory: each connection's lookaside goes from 48 KB to 6 KB, and the page cache grows a
#   page at a time instead of taking 20 pages at once (the edge database is small).
export LIBSQLITE3_FLAGS="-USQLITE_ENABLE_FTS3 -USQLITE_ENABLE_FTS3_PARENTHESIS -USQLITE_ENABLE_FTS5
  -USQLITE_ENABLE_RTREE -USQLITE_ENABLE_DBSTAT_VTAB -USQLITE_ENABLE_STAT4 -USQLITE_SOUNDEX
  -USQLITE_ENABLE_COLUMN_METADATA -USQLITE_ENABLE_LOAD_EXTENSION -DSQLITE_OMIT_LOAD_EXTENSION
  -DSQLITE_OMIT_DEPRECATED -DSQLITE_OMIT_SHARED_CACHE -DSQLITE_OMIT_PROGRESS_CALLBACK
  -DSQLITE_OMIT_JSON -DSQLITE_OMIT_COMPLETE -DSQLITE_OMIT_GET_TABLE -DSQLITE_DQS=0
  -DSQLITE_DEFAULT_MEMSTATUS=0 -DSQLITE_DEFAULT_LOOKASIDE=200,32 -DSQLITE_DEFAULT_PCACHE_INITSZ=0"
