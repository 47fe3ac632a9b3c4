//! A read-only reader of bbolt files (etcd-io/bbolt, the Go key/value store
//! containerd keeps its metadata in, `meta.db`), written by hand from the
//! file format in bbolt's source: `internal/common/page.go` (page header,
//! branch and leaf elements), `internal/common/meta.go` (the meta page and
//! its FNV-1a checksum) and `bucket.go` (a nested bucket's header and inline
//! buckets). No maintained Rust crate only reads such a file: `bbolt-rs` is a
//! port of the whole database (read-write, mapped into memory, with the
//! database's file lock, which containerd holds), and `nut` is an older port
//! of the same kind; a reader of four fixed structures is smaller than
//! either and can treat every byte as hostile.
//!
//! The whole file is parsed from a `&[u8]`. Every offset and length in it is
//! checked before it is used, tree descent and bucket nesting are limited,
//! and one lookup reads a bounded number of elements: a bad file is a
//! [`BoltError`] with a short reason, never a panic. The file may be read
//! while its owner writes it (containerd holds an flock we do not take), so
//! a lookup fails on any inconsistency instead of guessing: the meta pages
//! are checksummed, each page must carry its own id and one kind, and the
//! keys of each page must be sorted and lie within the range its parent
//! gave it. Whether the pages reachable from the meta used are all of one
//! transaction is for the caller to confirm with [`Bolt::same_metas`] over
//! the file's first pages read again afterwards (see containerd.rs).

/// The page header: id u64, flags u16, count u16, overflow u32.
const PAGE_HEADER: usize = 16;
/// A branch element (pos u32, ksize u32, pgid u64) and a leaf element
/// (flags u32, pos u32, ksize u32, vsize u32) are both 16 bytes.
const ELEMENT: usize = 16;
/// A nested bucket's value starts with its root page id and sequence.
const BUCKET_HEADER: usize = 16;
/// The meta after the page header: magic, version, page size and flags
/// (u32 each), the root bucket (16 bytes), the freelist, high water mark and
/// transaction id (u64 each), then the checksum of all that.
const META_CHECKED: usize = 56;
const META: usize = META_CHECKED + 8;
const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const META_PAGE: u16 = 0x04;
/// A leaf element with this flag holds a nested bucket.
const BUCKET_LEAF: u32 = 0x01;
/// The page sizes accepted: bbolt uses the operating system's (4 KiB, 16
/// KiB or 64 KiB), or what its options set.
const MIN_PAGE_SIZE: usize = 512;
const MAX_PAGE_SIZE: usize = 256 * 1024;
/// The most page levels in one bucket's tree: a B+tree of 4 KiB pages holding
/// one-byte keys is far shallower than this.
const MAX_TREE_DEPTH: usize = 32;
/// The most nested buckets one lookup goes through.
const MAX_BUCKET_DEPTH: usize = 16;
/// The most elements one lookup reads, over every page it visits.
const MAX_VISITS: usize = 1 << 20;

/// Why a bbolt file could not be read: a short reason, lowercase, without
/// the file's name (which the caller knows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BoltError(String);

fn fail<T>(reason: impl Into<String>) -> Result<T, BoltError> {
    Err(BoltError(reason.into()))
}

fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    let end = offset.checked_add(2)?;
    Some(u16::from_le_bytes(bytes.get(offset..end)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    Some(u32::from_le_bytes(bytes.get(offset..end)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    let end = offset.checked_add(8)?;
    Some(u64::from_le_bytes(bytes.get(offset..end)?.try_into().ok()?))
}

/// FNV-1a, 64 bits: Go's `hash/fnv.New64a`, bbolt's meta checksum.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What a valid meta page says.
#[derive(Debug, Clone, Copy)]
struct Meta {
    page_size: usize,
    root: u64,
    high_water: u64,
    txid: u64,
}

/// The meta page in slot `slot` (0 or 1), from the start of its page: `None`
/// when it is not a whole, valid meta (not bbolt's, another version, or torn).
fn parse_meta(page: &[u8], slot: u64) -> Option<Meta> {
    let meta = page.get(PAGE_HEADER..PAGE_HEADER.checked_add(META)?)?;
    // bbolt writes a meta page with id txid % 2, into that slot.
    if u64_at(page, 0)? != slot || u16_at(page, 8)? != META_PAGE {
        return None;
    }
    let checked = meta.get(..META_CHECKED)?;
    if u32_at(meta, 0)? != MAGIC
        || u32_at(meta, 4)? != VERSION
        || u64_at(meta, META_CHECKED)? != fnv1a64(checked)
    {
        return None;
    }
    let meta = Meta {
        page_size: usize::try_from(u32_at(meta, 8)?).ok()?,
        root: u64_at(meta, 16)?,
        high_water: u64_at(meta, 40)?,
        txid: u64_at(meta, 48)?,
    };
    (meta.txid % 2 == slot).then_some(meta)
}

/// The page sizes a meta in slot 1 may have been written with, when the one
/// in slot 0 cannot say: every power of two bbolt could have used.
fn page_sizes() -> impl Iterator<Item = usize> {
    (MIN_PAGE_SIZE.trailing_zeros()..=MAX_PAGE_SIZE.trailing_zeros()).map(|shift| 1 << shift)
}

/// Where a bucket's keys are: a tree of pages from its root page, or the one
/// leaf page stored inline in the bucket's value.
#[derive(Debug, Clone, Copy)]
enum Tree<'a> {
    Page(u64),
    Inline(&'a [u8]),
}

/// One leaf element: a key and its value, or a nested bucket's header.
#[derive(Debug, Clone, Copy)]
struct Entry<'a> {
    flags: u32,
    key: &'a [u8],
    value: &'a [u8],
}

impl Entry<'_> {
    fn is_bucket(&self) -> bool {
        self.flags & BUCKET_LEAF != 0
    }
}

/// A bbolt file as of its latest valid meta page.
#[derive(Debug)]
pub struct Bolt<'a> {
    bytes: &'a [u8],
    page_size: usize,
    root: u64,
    high_water: u64,
    txid: u64,
}

impl<'a> Bolt<'a> {
    /// The file's latest committed state: of its two meta pages, the valid
    /// one with the higher transaction id (the other may be torn: bbolt
    /// writes them in turn).
    pub fn parse(bytes: &'a [u8]) -> Result<Bolt<'a>, BoltError> {
        // The second meta page is one page in, and only a meta can say how
        // long a page is: it is looked for at every page size bbolt could
        // have used, and must be written with the size it is found at.
        let first = parse_meta(bytes, 0);
        let second = page_sizes().find_map(|size| {
            parse_meta(bytes.get(size..)?, 1).filter(|meta| meta.page_size == size)
        });
        if let (Some(first), Some(second)) = (first, second)
            && first.page_size != second.page_size
        {
            return fail("the meta pages disagree on the page size");
        }
        let Some(meta) = [first, second]
            .into_iter()
            .flatten()
            .max_by_key(|meta| meta.txid)
        else {
            return fail("no valid meta page");
        };
        if !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&meta.page_size)
            || !meta.page_size.is_power_of_two()
        {
            return fail(format!("unexpected page size {}", meta.page_size));
        }
        let size_says = usize::try_from(meta.high_water)
            .ok()
            .and_then(|pages| pages.checked_mul(meta.page_size));
        if size_says.is_none_or(|size| size > bytes.len()) {
            return fail(format!(
                "{} pages of {} bytes do not fit in {} bytes",
                meta.high_water,
                meta.page_size,
                bytes.len()
            ));
        }
        if meta.root < 2 || meta.root >= meta.high_water {
            return fail(format!("root page {} is out of range", meta.root));
        }
        Ok(Bolt {
            bytes,
            page_size: meta.page_size,
            root: meta.root,
            high_water: meta.high_water,
            txid: meta.txid,
        })
    }

    /// The transaction id of the state read.
    pub fn txid(&self) -> u64 {
        self.txid
    }

    /// Whether `prefix` (the start of the same file, read again after this
    /// copy was) holds the same two meta pages: then no transaction
    /// committed while the copy was read, and the pages reachable from its
    /// meta, which bbolt does not reuse before the next two commits, are
    /// all of one state.
    pub fn same_metas(&self, prefix: &[u8]) -> bool {
        let metas = self.page_size.saturating_mul(2);
        match (prefix.get(..metas), self.bytes.get(..metas)) {
            (Some(again), Some(before)) => again == before,
            _ => false,
        }
    }

    /// How many bytes of the file's start [`Bolt::same_metas`] compares.
    pub fn metas_len(&self) -> usize {
        self.page_size.saturating_mul(2)
    }

    /// The value of `key` in the bucket reached through `buckets` (each
    /// nested in the one before, from the top level), `None` when a bucket
    /// or the key is not there (or is a bucket where a value is asked, or a
    /// value where a bucket is).
    pub fn get(&self, buckets: &[&[u8]], key: &[u8]) -> Result<Option<&'a [u8]>, BoltError> {
        if buckets.len() > MAX_BUCKET_DEPTH {
            return fail("buckets nested too deep");
        }
        let mut budget = MAX_VISITS;
        let mut tree = Tree::Page(self.root);
        for name in buckets {
            match self.find(tree, name, &mut budget)? {
                Some(entry) if entry.is_bucket() => tree = bucket_tree(entry.value)?,
                _ => return Ok(None),
            }
        }
        Ok(self
            .find(tree, key, &mut budget)?
            .filter(|entry| !entry.is_bucket())
            .map(|entry| entry.value))
    }

    /// Page `pgid` with its overflow pages, after checking that it lies
    /// below the high water mark and calls itself `pgid`.
    fn page(&self, pgid: u64) -> Result<&'a [u8], BoltError> {
        if pgid < 2 || pgid >= self.high_water {
            return fail(format!("page {pgid} is out of range"));
        }
        let out_of_file = || BoltError(format!("page {pgid} is outside the file"));
        let start = usize::try_from(pgid)
            .ok()
            .and_then(|pgid| pgid.checked_mul(self.page_size))
            .ok_or_else(out_of_file)?;
        let header = self
            .bytes
            .get(start..start.saturating_add(PAGE_HEADER))
            .ok_or_else(out_of_file)?;
        let id = u64_at(header, 0).ok_or_else(out_of_file)?;
        if id != pgid {
            return fail(format!("page {pgid} says it is page {id}"));
        }
        let overflow = u32_at(header, 12).ok_or_else(out_of_file)?;
        if pgid.saturating_add(u64::from(overflow)) >= self.high_water {
            return fail(format!("page {pgid} overflows past the last page"));
        }
        let len = usize::try_from(overflow)
            .ok()
            .and_then(|overflow| overflow.checked_add(1))
            .and_then(|pages| pages.checked_mul(self.page_size))
            .ok_or_else(out_of_file)?;
        self.bytes
            .get(start..start.checked_add(len).ok_or_else(out_of_file)?)
            .ok_or_else(out_of_file)
    }

    /// The leaf entry of `key` in a bucket's tree, descending its branch
    /// pages. Every page on the way is checked: one kind, sorted keys inside
    /// the range its parent gave it, no page twice.
    fn find(
        &self,
        tree: Tree<'a>,
        key: &[u8],
        budget: &mut usize,
    ) -> Result<Option<Entry<'a>>, BoltError> {
        let (mut page, inline) = match tree {
            Tree::Page(pgid) => (self.page(pgid)?, false),
            Tree::Inline(page) => (page, true),
        };
        let mut visited: Vec<u64> = Vec::new();
        if let Tree::Page(pgid) = tree {
            visited.push(pgid);
        }
        // The keys a page may hold: at least its branch element's key, and
        // less than the next element's.
        let mut lower: Option<&[u8]> = None;
        let mut upper: Option<&[u8]> = None;
        for _ in 0..MAX_TREE_DEPTH {
            let (flags, count) = header(page)?;
            *budget = budget
                .checked_sub(count)
                .ok_or_else(|| BoltError("too many elements read".into()))?;
            match flags {
                LEAF_PAGE => {
                    let mut found = None;
                    let mut previous: Option<&[u8]> = None;
                    for index in 0..count {
                        let entry = leaf_element(page, index)?;
                        check_order(entry.key, previous, lower, upper)?;
                        if inline && entry.is_bucket() {
                            return fail("an inline bucket holds a bucket");
                        }
                        if entry.key == key {
                            found = Some(entry);
                        }
                        previous = Some(entry.key);
                    }
                    return Ok(found);
                }
                BRANCH_PAGE if !inline => {
                    if count == 0 {
                        return fail("an empty branch page");
                    }
                    // The child to descend into: the last whose first key is
                    // not above `key`, else the first (as bbolt's cursor).
                    let mut chosen: Option<(usize, &[u8], u64)> = None;
                    let mut next_key: Option<&[u8]> = None;
                    let mut previous: Option<&[u8]> = None;
                    for index in 0..count {
                        let (element_key, child) = branch_element(page, index)?;
                        check_order(element_key, previous, lower, upper)?;
                        previous = Some(element_key);
                        if chosen.is_none() || element_key <= key {
                            chosen = Some((index, element_key, child));
                            next_key = None;
                        } else if next_key.is_none() {
                            next_key = Some(element_key);
                        }
                    }
                    let Some((_, child_lower, child)) = chosen else {
                        return fail("an empty branch page");
                    };
                    if visited.contains(&child) {
                        return fail(format!("page {child} is its own descendant"));
                    }
                    visited.push(child);
                    lower = Some(child_lower);
                    upper = next_key.or(upper);
                    page = self.page(child)?;
                }
                _ => return fail(format!("a page of unexpected kind {flags:#x}")),
            }
        }
        fail("a tree deeper than its limit")
    }
}

/// A nested bucket's tree from its value: its root page, or (root 0) the
/// leaf page that follows the header inside the value.
fn bucket_tree(value: &[u8]) -> Result<Tree<'_>, BoltError> {
    let root = u64_at(value, 0).ok_or_else(|| BoltError("a short bucket header".into()))?;
    if root != 0 {
        return Ok(Tree::Page(root));
    }
    match value.get(BUCKET_HEADER..) {
        Some(page) if page.len() >= PAGE_HEADER => Ok(Tree::Inline(page)),
        _ => fail("a short inline bucket"),
    }
}

/// A page's kind and element count, after checking that the elements fit.
fn header(page: &[u8]) -> Result<(u16, usize), BoltError> {
    let short = || BoltError("a short page".into());
    let flags = u16_at(page, 8).ok_or_else(short)?;
    let count = usize::from(u16_at(page, 10).ok_or_else(short)?);
    let elements_end = count
        .checked_mul(ELEMENT)
        .and_then(|len| len.checked_add(PAGE_HEADER));
    if elements_end.is_none_or(|end| end > page.len()) {
        return fail(format!("{count} elements do not fit in their page"));
    }
    Ok((flags, count))
}

/// The bytes `len` long at `pos` after the element at `element`, inside
/// the page.
fn element_bytes(page: &[u8], element: usize, pos: u32, len: u32) -> Result<&[u8], BoltError> {
    let start = usize::try_from(pos)
        .ok()
        .and_then(|pos| element.checked_add(pos));
    let end = usize::try_from(len)
        .ok()
        .zip(start)
        .and_then(|(len, start)| start.checked_add(len));
    start
        .zip(end)
        .and_then(|(start, end)| page.get(start..end))
        .ok_or_else(|| BoltError("an element points outside its page".into()))
}

fn element_offset(index: usize) -> Result<usize, BoltError> {
    index
        .checked_mul(ELEMENT)
        .and_then(|offset| offset.checked_add(PAGE_HEADER))
        .ok_or_else(|| BoltError("an element outside its page".into()))
}

fn leaf_element(page: &[u8], index: usize) -> Result<Entry<'_>, BoltError> {
    let at = element_offset(index)?;
    let short = || BoltError("an element outside its page".into());
    let flags = u32_at(page, at).ok_or_else(short)?;
    let pos = u32_at(page, at.saturating_add(4)).ok_or_else(short)?;
    let ksize = u32_at(page, at.saturating_add(8)).ok_or_else(short)?;
    let vsize = u32_at(page, at.saturating_add(12)).ok_or_else(short)?;
    let key = element_bytes(page, at, pos, ksize)?;
    let value = element_bytes(page, at, pos.checked_add(ksize).ok_or_else(short)?, vsize)?;
    Ok(Entry { flags, key, value })
}

fn branch_element(page: &[u8], index: usize) -> Result<(&[u8], u64), BoltError> {
    let at = element_offset(index)?;
    let short = || BoltError("an element outside its page".into());
    let pos = u32_at(page, at).ok_or_else(short)?;
    let ksize = u32_at(page, at.saturating_add(4)).ok_or_else(short)?;
    let child = u64_at(page, at.saturating_add(8)).ok_or_else(short)?;
    Ok((element_bytes(page, at, pos, ksize)?, child))
}

/// Keys in a page are strictly ascending and inside `[lower, upper)`, the
/// range the parent's branch element gave the page: a page reused by a
/// later transaction, read half-written, or forged, fails here.
fn check_order(
    key: &[u8],
    previous: Option<&[u8]>,
    lower: Option<&[u8]>,
    upper: Option<&[u8]>,
) -> Result<(), BoltError> {
    let in_order = previous.is_none_or(|previous| previous < key)
        && lower.is_none_or(|lower| lower <= key)
        && upper.is_none_or(|upper| key < upper);
    if in_order {
        Ok(())
    } else {
        fail("keys out of order")
    }
}

/// Hand-made bbolt files for the tests (here and in containerd.rs).
#[cfg(test)]
pub(super) mod build {
    use super::*;

    /// A value in a bucket being built.
    pub(crate) enum Value {
        Plain(Vec<u8>),
        /// A bucket on pages of its own: one leaf, or (several groups) a
        /// branch page over one leaf per group.
        Bucket(Vec<Vec<(Vec<u8>, Value)>>),
        /// A bucket stored inline in its value.
        Inline(Vec<(Vec<u8>, Value)>),
    }

    pub(crate) fn plain(key: &str, value: &str) -> (Vec<u8>, Value) {
        (key.into(), Value::Plain(value.into()))
    }

    pub(crate) fn bucket(key: &str, entries: Vec<(Vec<u8>, Value)>) -> (Vec<u8>, Value) {
        (key.into(), Value::Bucket(vec![entries]))
    }

    pub(crate) fn inline(key: &str, entries: Vec<(Vec<u8>, Value)>) -> (Vec<u8>, Value) {
        (key.into(), Value::Inline(entries))
    }

    pub(crate) const PAGE_SIZE: usize = 4096;

    /// The pages after the metas and the freelist, each unpadded.
    struct Pages(Vec<Vec<u8>>);

    impl Pages {
        fn next_id(&self) -> u64 {
            3 + self.0.len() as u64
        }

        /// Writes a leaf page (and the pages of the buckets it holds) and
        /// gives its id.
        fn leaf(&mut self, entries: Vec<(Vec<u8>, Value)>) -> u64 {
            let page = self.leaf_bytes(entries);
            self.push(page)
        }

        fn push(&mut self, mut page: Vec<u8>) -> u64 {
            let id = self.next_id();
            let overflow = page.len().div_ceil(PAGE_SIZE).saturating_sub(1);
            page[..8].copy_from_slice(&id.to_le_bytes());
            page[12..16].copy_from_slice(&(overflow as u32).to_le_bytes());
            page.resize((overflow + 1) * PAGE_SIZE, 0);
            // Overflow pages take ids of their own.
            self.0.push(page);
            for _ in 0..overflow {
                self.0.push(Vec::new());
            }
            id
        }

        fn leaf_bytes(&mut self, mut entries: Vec<(Vec<u8>, Value)>) -> Vec<u8> {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let items: Vec<(u32, Vec<u8>, Vec<u8>)> = entries
                .into_iter()
                .map(|(key, value)| match value {
                    Value::Plain(value) => (0, key, value),
                    Value::Bucket(groups) => {
                        let root = self.tree(groups);
                        let mut header = root.to_le_bytes().to_vec();
                        header.extend(0u64.to_le_bytes());
                        (BUCKET_LEAF, key, header)
                    }
                    Value::Inline(entries) => {
                        let mut value = vec![0; BUCKET_HEADER];
                        value.extend(self.leaf_bytes(entries));
                        (BUCKET_LEAF, key, value)
                    }
                })
                .collect();
            let mut page = page_header(LEAF_PAGE, items.len());
            let mut data: Vec<u8> = Vec::new();
            let data_start = PAGE_HEADER + items.len() * ELEMENT;
            for (index, (flags, key, value)) in items.iter().enumerate() {
                let element = PAGE_HEADER + index * ELEMENT;
                let pos = data_start + data.len() - element;
                page.extend(flags.to_le_bytes());
                page.extend((pos as u32).to_le_bytes());
                page.extend((key.len() as u32).to_le_bytes());
                page.extend((value.len() as u32).to_le_bytes());
                data.extend(key);
                data.extend(value);
            }
            page.extend(data);
            page
        }

        fn tree(&mut self, mut groups: Vec<Vec<(Vec<u8>, Value)>>) -> u64 {
            if groups.len() == 1 {
                return self.leaf(groups.remove(0));
            }
            let mut children = Vec::new();
            for mut group in groups {
                group.sort_by(|a, b| a.0.cmp(&b.0));
                let first = group
                    .first()
                    .map(|(key, _)| key.clone())
                    .unwrap_or_default();
                children.push((first, self.leaf(group)));
            }
            self.push(branch_bytes(&children))
        }
    }

    pub(crate) fn branch_bytes(children: &[(Vec<u8>, u64)]) -> Vec<u8> {
        let mut page = page_header(BRANCH_PAGE, children.len());
        let mut data: Vec<u8> = Vec::new();
        let data_start = PAGE_HEADER + children.len() * ELEMENT;
        for (index, (key, child)) in children.iter().enumerate() {
            let element = PAGE_HEADER + index * ELEMENT;
            let pos = data_start + data.len() - element;
            page.extend((pos as u32).to_le_bytes());
            page.extend((key.len() as u32).to_le_bytes());
            page.extend(child.to_le_bytes());
            data.extend(key);
        }
        page.extend(data);
        page
    }

    fn page_header(flags: u16, count: usize) -> Vec<u8> {
        let mut page = vec![0; 8];
        page.extend(flags.to_le_bytes());
        page.extend((count as u16).to_le_bytes());
        page.extend(0u32.to_le_bytes());
        page
    }

    /// A meta page for `slot` with a correct checksum.
    pub(crate) fn meta(slot: u64, root: u64, high_water: u64, txid: u64) -> Vec<u8> {
        let mut page = slot.to_le_bytes().to_vec();
        page.extend(META_PAGE.to_le_bytes());
        page.extend([0; 6]);
        let mut meta = Vec::new();
        meta.extend(MAGIC.to_le_bytes());
        meta.extend(VERSION.to_le_bytes());
        meta.extend((PAGE_SIZE as u32).to_le_bytes());
        meta.extend(0u32.to_le_bytes());
        meta.extend(root.to_le_bytes());
        meta.extend(0u64.to_le_bytes());
        meta.extend(2u64.to_le_bytes());
        meta.extend(high_water.to_le_bytes());
        meta.extend(txid.to_le_bytes());
        meta.extend(fnv1a64(&meta).to_le_bytes());
        page.extend(meta);
        page.resize(PAGE_SIZE, 0);
        page
    }

    /// A whole file whose top level holds `entries`, both metas (txids 4
    /// and 5) naming it.
    pub(crate) fn file(entries: Vec<(Vec<u8>, Value)>) -> Vec<u8> {
        let mut pages = Pages(Vec::new());
        let root = pages.leaf(entries);
        let high_water = pages.next_id();
        let mut bytes = meta(0, root, high_water, 4);
        bytes.extend(meta(1, root, high_water, 5));
        let mut freelist = 2u64.to_le_bytes().to_vec();
        freelist.extend(0x10u16.to_le_bytes());
        freelist.resize(PAGE_SIZE, 0);
        bytes.extend(freelist);
        for page in pages.0 {
            bytes.extend(page);
        }
        bytes
    }

    /// Overwrites page `pgid` of `bytes` with `page` (padded).
    pub(crate) fn put_page(bytes: &mut [u8], pgid: u64, page: &[u8]) {
        let start = pgid as usize * PAGE_SIZE;
        bytes[start..start + page.len()].copy_from_slice(page);
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;
    use proptest::prelude::*;

    /// containerd's layout: a namespace with a container and the image it
    /// was made from, the container's bucket split over two leaves under a
    /// branch page, the image's target inline.
    fn containerd_file() -> Vec<u8> {
        file(vec![bucket(
            "v1",
            vec![
                plain("version", "\u{3}"),
                bucket(
                    "default",
                    vec![
                        (
                            b"containers".to_vec(),
                            Value::Bucket(vec![
                                vec![
                                    bucket("db", vec![plain("image", "docker.io/library/redis:7")]),
                                    inline("a-web", vec![plain("image", "lab/web:1")]),
                                ],
                                vec![
                                    inline("web", vec![plain("image", "lab/busybox:1")]),
                                    inline("zz", vec![plain("snapshotKey", "zz")]),
                                ],
                            ]),
                        ),
                        bucket(
                            "images",
                            vec![bucket(
                                "lab/busybox:1",
                                vec![
                                    plain("createdat", "x"),
                                    inline(
                                        "target",
                                        vec![
                                            plain("digest", "sha256:0123"),
                                            plain("mediatype", "application/vnd.oci"),
                                        ],
                                    ),
                                ],
                            )],
                        ),
                    ],
                ),
            ],
        )])
    }

    fn image_of(bolt: &Bolt<'_>, id: &str) -> Result<Option<String>, BoltError> {
        bolt.get(&[b"v1", b"default", b"containers", id.as_bytes()], b"image")
            .map(|value| value.map(|value| String::from_utf8_lossy(value).into_owned()))
    }

    #[test]
    fn a_containers_image_and_its_digest_are_found() {
        let bytes = containerd_file();
        let bolt = Bolt::parse(&bytes).expect("parses");
        assert_eq!(bolt.txid(), 5);
        assert_eq!(image_of(&bolt, "web"), Ok(Some("lab/busybox:1".to_owned())));
        assert_eq!(image_of(&bolt, "a-web"), Ok(Some("lab/web:1".to_owned())));
        assert_eq!(
            image_of(&bolt, "db"),
            Ok(Some("docker.io/library/redis:7".to_owned()))
        );
        assert_eq!(image_of(&bolt, "zz"), Ok(None), "no image key");
        assert_eq!(image_of(&bolt, "nope"), Ok(None), "below the first key");
        assert_eq!(image_of(&bolt, "zzz"), Ok(None), "past the last key");
        assert_eq!(
            bolt.get(
                &[b"v1", b"default", b"images", b"lab/busybox:1", b"target"],
                b"digest"
            ),
            Ok(Some(&b"sha256:0123"[..]))
        );
        // A bucket is no value, and a value no bucket.
        assert_eq!(bolt.get(&[b"v1"], b"default"), Ok(None));
        assert_eq!(bolt.get(&[b"v1", b"version"], b"x"), Ok(None));
        assert_eq!(bolt.get(&[b"v2"], b"x"), Ok(None));
        assert!(bolt.same_metas(&bytes[..bolt.metas_len()]));
        assert!(!bolt.same_metas(&bytes[..100]));
    }

    #[test]
    fn the_latest_valid_meta_is_used_and_a_torn_one_is_skipped() {
        let mut bytes = containerd_file();
        let good = Bolt::parse(&bytes).expect("parses");
        let (root, high_water) = (good.root, good.high_water);
        // Meta 0 newer, but pointing at an empty leaf (page 2 made one).
        let mut empty_leaf = 2u64.to_le_bytes().to_vec();
        empty_leaf.extend(LEAF_PAGE.to_le_bytes());
        empty_leaf.extend([0; 6]);
        put_page(&mut bytes, 2, &empty_leaf);
        put_page(&mut bytes, 0, &meta(0, 2, high_water, 6));
        let bolt = Bolt::parse(&bytes).expect("parses");
        assert_eq!(bolt.txid(), 6);
        assert_eq!(image_of(&bolt, "web"), Ok(None));
        // Torn (its checksum no longer matches): meta 1 is used.
        bytes[PAGE_HEADER + 20] ^= 0xff;
        let bolt = Bolt::parse(&bytes).expect("parses");
        assert_eq!((bolt.txid(), bolt.root), (5, root));
        assert_eq!(image_of(&bolt, "web"), Ok(Some("lab/busybox:1".to_owned())));
        // Both torn: nothing is read.
        bytes[PAGE_SIZE + PAGE_HEADER + 20] ^= 0xff;
        assert_eq!(
            Bolt::parse(&bytes).map(|b| b.txid()),
            Err(BoltError("no valid meta page".into()))
        );
    }

    #[test]
    fn hostile_files_are_errors() {
        let bytes = containerd_file();
        let bolt = Bolt::parse(&bytes).expect("parses");
        let (root, high_water) = (bolt.root, bolt.high_water);
        let with_root_page = |page: &[u8]| {
            let mut bytes = bytes.clone();
            put_page(&mut bytes, root, page);
            bytes
        };
        let lookup = |bytes: &[u8]| Bolt::parse(bytes).and_then(|bolt| image_of(&bolt, "web"));

        // A page pointing at itself, and at a page beyond the file.
        let mut looping = branch_bytes(&[(b"v1".to_vec(), root)]);
        looping[..8].copy_from_slice(&root.to_le_bytes());
        assert_eq!(
            lookup(&with_root_page(&looping)),
            Err(BoltError(format!("page {root} is its own descendant")))
        );
        let mut beyond = branch_bytes(&[(b"v1".to_vec(), 1 << 40)]);
        beyond[..8].copy_from_slice(&root.to_le_bytes());
        assert!(lookup(&with_root_page(&beyond)).is_err());

        // An element whose key lies past its page; a huge count.
        let mut leaf = bytes[root as usize * PAGE_SIZE..][..PAGE_SIZE].to_vec();
        leaf[PAGE_HEADER + 4..PAGE_HEADER + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            lookup(&with_root_page(&leaf)),
            Err(BoltError("an element points outside its page".into()))
        );
        let mut leaf = bytes[root as usize * PAGE_SIZE..][..PAGE_SIZE].to_vec();
        leaf[10..12].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(
            lookup(&with_root_page(&leaf)),
            Err(BoltError("65535 elements do not fit in their page".into()))
        );
        // A page overflowing past the file, a page with another's id, a
        // page of no known kind.
        let mut leaf = bytes[root as usize * PAGE_SIZE..][..PAGE_SIZE].to_vec();
        leaf[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(lookup(&with_root_page(&leaf)).is_err());
        let mut leaf = bytes[root as usize * PAGE_SIZE..][..PAGE_SIZE].to_vec();
        leaf[..8].copy_from_slice(&7u64.to_le_bytes());
        assert!(lookup(&with_root_page(&leaf)).is_err());
        let mut leaf = bytes[root as usize * PAGE_SIZE..][..PAGE_SIZE].to_vec();
        leaf[8] = 0x10;
        assert!(lookup(&with_root_page(&leaf)).is_err());

        // Metas that claim more pages than the file has, a root out of
        // range, an unknown page size (with a correct checksum).
        let mut short = bytes.clone();
        put_page(&mut short, 0, &meta(0, root, high_water + 1, 8));
        put_page(&mut short, 1, &meta(1, root, high_water + 1, 9));
        assert!(Bolt::parse(&short).is_err());
        let mut bad_root = bytes.clone();
        put_page(&mut bad_root, 1, &meta(1, high_water, high_water, 9));
        assert!(Bolt::parse(&bad_root).is_err());
        let mut odd = meta(0, root, high_water, 8);
        odd[PAGE_HEADER + 8..PAGE_HEADER + 12].copy_from_slice(&1000u32.to_le_bytes());
        let sum = fnv1a64(&odd[PAGE_HEADER..PAGE_HEADER + META_CHECKED]);
        odd[PAGE_HEADER + META_CHECKED..PAGE_HEADER + META].copy_from_slice(&sum.to_le_bytes());
        let mut odd_bytes = bytes.clone();
        put_page(&mut odd_bytes, 0, &odd);
        assert!(Bolt::parse(&odd_bytes).is_err());
        assert!(Bolt::parse(&[]).is_err());
        assert!(Bolt::parse(&bytes[..PAGE_SIZE + 10]).is_err());
    }

    #[test]
    fn keys_out_of_order_or_outside_their_range_are_errors() {
        // Two leaves under a branch whose keys put "web" in the first leaf's
        // range although it is not: a page of another state.
        let bytes = file(vec![(
            b"v1".to_vec(),
            Value::Bucket(vec![
                vec![plain("b", "1"), plain("a", "0")],
                vec![plain("c", "2")],
            ]),
        )]);
        let bolt = Bolt::parse(&bytes).expect("parses");
        assert_eq!(bolt.get(&[b"v1"], b"c"), Ok(Some(&b"2"[..])));
        // Swap the leaves under the branch: the keys no longer fit the
        // branch's ranges.
        // The builder wrote the leaves, then the branch, then the top level.
        let branch = bolt.root - 1;
        let leaves = [branch - 2, branch - 1];
        let swapped = branch_bytes(&[(b"a".to_vec(), leaves[1]), (b"c".to_vec(), leaves[0])]);
        let mut page = swapped;
        page[..8].copy_from_slice(&branch.to_le_bytes());
        let mut bytes = bytes.clone();
        put_page(&mut bytes, branch, &page);
        let bolt = Bolt::parse(&bytes).expect("parses");
        assert_eq!(
            bolt.get(&[b"v1"], b"a"),
            Err(BoltError("keys out of order".into()))
        );
    }

    #[test]
    fn fnv1a_is_gos() {
        // hash/fnv's New64a of "" and of "a".
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..9000)) {
            if let Ok(bolt) = Bolt::parse(&bytes) {
                let _ = image_of(&bolt, "web");
            }
        }

        #[test]
        fn damaged_files_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        ) {
            let mut bytes = containerd_file();
            let len = bytes.len();
            for (index, byte) in flips {
                bytes[index.index(len)] = byte;
            }
            if let Ok(bolt) = Bolt::parse(&bytes) {
                let _ = image_of(&bolt, "web");
                let _ = bolt.get(&[b"v1", b"default", b"images", b"lab/busybox:1", b"target"], b"digest");
            }
        }
    }
}
