# Sourced by tests/keycloak/run.sh and .ci/run: fetches Keycloak's server distribution from
# Maven Central (kept in ~/.m2), unpacks it once per version under ~/.cache/tcc-keycloak, and
# exports KEYCLOAK_HOME and JAVA_HOME for the tests. Keycloak 26 wants Java 21 or later:
# Debian 12 has only 17, so the Temurin 25 JDK, which Keycloak 26.5 runs on, unless
# KEYCLOAK_JAVA_HOME names another.
KEYCLOAK_VERSION=26.5.6
KEYCLOAK_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/tcc-keycloak"
export KEYCLOAK_HOME="$KEYCLOAK_CACHE/keycloak-$KEYCLOAK_VERSION"
if [ ! -x "$KEYCLOAK_HOME/bin/kc.sh" ]; then
  if ! command -v mvn >/dev/null 2>&1 || ! command -v unzip >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven unzip >/dev/null
  fi
  mkdir -p "$KEYCLOAK_CACHE"
  mvn -B -q dependency:copy -Dartifact="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:zip" \
    -DoutputDirectory="$KEYCLOAK_CACHE"
  rm -rf "$KEYCLOAK_HOME"
  unzip -q "$KEYCLOAK_CACHE/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip" -d "$KEYCLOAK_CACHE"
  rm -f "$KEYCLOAK_CACHE/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip"
fi
export JAVA_HOME="${KEYCLOAK_JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}"
"$JAVA_HOME/bin/java" -version 2>&1 | head -n 1
