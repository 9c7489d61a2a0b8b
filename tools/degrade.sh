# Sourced by the tests and benchmarks that read degraded pages: degrade_page IN OUT writes
# OUT, IN in grey, blurred (sigma 1.2) with Gaussian grain (sigma 24, seeded: the same
# grain every run).
degrade_page() {
    local w h t
    w=$(vipsheader -f width "$1")
    h=$(vipsheader -f height "$1")
    t=$(mktemp -d)
    vips colourspace "$1" "$t/g.v" b-w
    vips gaussblur "$t/g.v" "$t/b.v" 1.2
    vips gaussnoise "$t/n.v" "$w" "$h" --sigma 24 --mean 0 --seed 42
    vips add "$t/b.v" "$t/n.v" "$t/d.v"
    vips cast "$t/d.v" "$2" uchar
    rm -rf "$t"
}
