//! A small key–value record store in hypervectors.
//!
//! Each record `{name: alice, city: paris, lang: rust}` is encoded as one binary hypervector:
//! the majority of `bind(role, value)` over its fields. Records go into an item memory; a query
//! finds the record by any field(s), then unbinds a role and cleans the result up against the
//! vocabulary. A second part stores a whole `name → city` map in one count bundle with a
//! capacity cap and decodes it with iterative cleanup.
//!
//! Run with `cargo run --release -p ternary-vsa --example record_store`.

use ternary_vsa::capacity::CapacityModel;
use ternary_vsa::cleanup::{self, ExplainAway};
use ternary_vsa::{BinaryHv, CapacityLimit, CountBundle, ItemMemory, OnExceed, Result, basis};

const D: usize = 10_000;

/// Symbols of the store, each with a random hypervector.
struct Vocabulary {
    words: Vec<&'static str>,
    memory: ItemMemory<BinaryHv>,
}

impl Vocabulary {
    fn new(words: Vec<&'static str>, seed: u64) -> Result<Self> {
        let memory = ItemMemory::new(basis::random_binary(words.len(), D, seed)?)?;
        Ok(Self { words, memory })
    }

    fn vector(&self, word: &str) -> Result<&BinaryHv> {
        let i = self.words.iter().position(|w| *w == word).ok_or_else(|| {
            ternary_vsa::VsaError::InvalidArgument(format!("unknown word {word}"))
        })?;
        Ok(&self.memory.items()[i])
    }

    /// The vocabulary word nearest to `v`, with its cosine similarity.
    fn cleanup(&self, v: &BinaryHv) -> Result<(&'static str, f64)> {
        let m = self.memory.nearest(v)?;
        Ok((self.words[m.index], m.similarity as f64 / D as f64))
    }
}

fn main() -> Result<()> {
    let roles = Vocabulary::new(vec!["name", "city", "lang"], 1)?;
    let values = Vocabulary::new(
        vec![
            "alice", "bob", "carol", "dave", "erin", "paris", "tokyo", "lima", "oslo", "rust",
            "python", "haskell", "c",
        ],
        2,
    )?;
    let table = [
        ["alice", "paris", "rust"],
        ["bob", "tokyo", "python"],
        ["carol", "lima", "haskell"],
        ["dave", "oslo", "rust"],
        ["erin", "paris", "c"],
    ];

    // Encode: record = majority(Σ_field bind(role, value)); three fields, so no ties.
    let mut records = Vec::new();
    for row in &table {
        let mut bundle = CountBundle::new(D)?;
        for (role, value) in ["name", "city", "lang"].iter().zip(row) {
            let _ = bundle.add(&roles.vector(role)?.bind(values.vector(value)?)?)?;
        }
        records.push(bundle.majority(0));
    }
    let store = ItemMemory::new(records)?;

    // Query 1: the city of carol. Find the record by its name field, unbind the city role.
    let probe = roles.vector("name")?.bind(values.vector("carol")?)?;
    let record = store.nearest(&probe)?;
    let city = store.items()[record.index].bind(roles.vector("city")?)?;
    let (answer, cos) = values.cleanup(&city)?;
    println!(
        "city of carol: {answer} (record {}, cosine {cos:.2})",
        record.index
    );

    // Query 2: who lives in paris and writes rust? Bundle the two field probes.
    let mut q = CountBundle::new(D)?;
    let _ = q.add(&roles.vector("city")?.bind(values.vector("paris")?)?)?;
    let _ = q.add(&roles.vector("lang")?.bind(values.vector("rust")?)?)?;
    let hits = store.top_k(&q.majority(7), 2)?;
    for h in &hits {
        let name = store.items()[h.index].bind(roles.vector("name")?)?;
        println!(
            "paris & rust: {} (similarity {})",
            values.cleanup(&name)?.0,
            h.similarity
        );
    }

    // Part 2: a name → city map of many people in ONE count bundle, capped for 99% one-shot
    // accuracy. We store more pairs than the cap: the bundle reports it (OnExceed::Flag), and
    // iterative cleanup still decodes them.
    let people = 450;
    let names = basis::random_binary(people, D, 3)?;
    let cities = ItemMemory::new(basis::random_binary(50, D, 4)?)?;
    let limit = CapacityLimit::for_target(
        CapacityModel::CountBundle,
        D,
        cities.len(),
        0.99,
        OnExceed::Flag,
    )?;
    println!(
        "cap for 99% one-shot accuracy with 50 cities: {} pairs",
        limit.max_items
    );
    let mut map = CountBundle::with_limit(D, limit)?;
    let truth: Vec<usize> = (0..people).map(|i| (i * 7 + 3) % cities.len()).collect();
    let mut load = map.load();
    for (name, &c) in names.iter().zip(&truth) {
        load = map.add(&name.bind(&cities.items()[c])?)?;
    }
    println!("stored {people} pairs: {load:?}");
    let score = |found: &[ternary_vsa::Match]| {
        found
            .iter()
            .zip(&truth)
            .filter(|(m, t)| m.index == **t)
            .count()
    };
    let one_shot = cleanup::unbind_nearest(&map, &names, &cities)?;
    println!(
        "one-shot decoding: {}/{people} correct (model: {:.3})",
        score(&one_shot),
        CapacityModel::CountBundle.accuracy(D, people, cities.len())
    );
    let iterative = cleanup::explain_away(&map, &names, &cities, &ExplainAway::default())?;
    println!(
        "iterative cleanup: {}/{people} correct ({} rounds, {} fixed by refinement)",
        score(&iterative.matches),
        iterative.rounds,
        iterative.changed
    );
    Ok(())
}
