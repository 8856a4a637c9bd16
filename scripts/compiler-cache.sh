# Sourced by the build scripts: ccache, when present, as the compiler launcher (`launcher`, the
# cmake arguments), sharing hits across clones of the tree (CI builds a fresh clone in another
# folder each time).
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}" CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-true}"
launcher=()
if command -v ccache >/dev/null 2>&1; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
