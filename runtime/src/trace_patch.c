/* trace_patch.c: GOT/PLT rewriting and the table of loaded objects.
 *
 * For every object the dynamic linker has loaded (dl_iterate_phdr), except the dynamic
 * linker itself, the vDSO and libcytrace, walk its PLT and dynamic relocations
 * (R_X86_64_JUMP_SLOT, R_X86_64_GLOB_DAT) and point the slots of the intercepted
 * functions at our hooks, remembering what they held. Slots inside PT_GNU_RELRO are made
 * writable for the write and read-only again. A rescan after each dlopen/dlclose patches
 * the new objects and notes the ones that went away (UNLOAD; their slots are forgotten,
 * never written). Stop restores every slot that still holds our hook.
 *
 * Each object seen gets an OBJECT record (path, build-id, load bias, PT_LOAD ranges, the
 * load generation from which it may be mapped) so reports can symbolise offline, and
 * telling apart a library unloaded and another loaded at its address. Objects that link
 * libcytrace (cytool-built modules, compiled with frame pointers) register their code
 * with the frame-pointer unwinder.
 *
 * Another tracer may rewrite the same slots (memray, heaptrack attach): cyt_patch_check,
 * run by the writer every 100 ms and at stop, notes every slot that stopped leading to our
 * hook (or leads to it again) as a TAKEOVER record, naming the object it now leads into.
 * A slot given back (it holds the real function again: the other tracer stopped and
 * restored what it had found) is patched again.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <unistd.h>

#include "trace_internal.h"

typedef struct hook_entry {
    const char *name;
    void *hook;
    void *real;
} hook_entry;

extern const hook_entry cyt_hook_table[];
extern const size_t cyt_hook_count;
extern const hook_entry cyt_unwinder_hook_table[]; /* libunwind's own slots only */
extern const size_t cyt_unwinder_hook_count;

typedef struct patched_slot {
    uintptr_t *slot;
    uintptr_t original;
    void *hook;
    const hook_entry *entry; /* the function's name, hook and real address */
    uintptr_t foreign; /* what the slot held when last seen not leading to us (0: ours) */
} patched_slot;

typedef struct object {
    uintptr_t base;
    const void *phdr;
    uint32_t id;
    int present;
    int fp;
    int unwinder; /* libunwind: its slots of cyt_unwinder_hook_table too */
    uintptr_t relro_start, relro_end;
    patched_slot *slots;
    size_t nslots;
    uintptr_t exec_start[4];
    int nexec;
} object;

static pthread_mutex_t patch_lock = PTHREAD_MUTEX_INITIALIZER;
static object *objects;
static size_t nobjects, objects_cap;
/* The objects of the last session, parked at its stop with their slots' addresses: the
 * next session's first scan takes an object's slots from here instead of walking its
 * relocations again (most of a start's time in a process with many libraries: the pytest
 * plugin starts a session per test), as long as the dynamic linker loaded and unloaded
 * nothing since (dl_phdr_info's dlpi_adds and dlpi_subs unchanged): then each object is
 * still the one at its address. */
static object *parked;
static size_t nparked;
static unsigned long long parked_adds, parked_subs;
static int parked_valid;
static uint32_t next_object_id;
static size_t page_size;
_Atomic uint64_t cyt_load_generation;

void cyt_patch_lock(void) { pthread_mutex_lock(&patch_lock); }
void cyt_patch_unlock(void) { pthread_mutex_unlock(&patch_lock); }

static int contains_self(const struct dl_phdr_info *info) {
    uintptr_t me = (uintptr_t)&contains_self;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD) continue;
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        if (me >= start && me < start + ph->p_memsz) return 1;
    }
    return 0;
}

static int is_vdso(const struct dl_phdr_info *info) {
    uintptr_t ehdr = (uintptr_t)getauxval(AT_SYSINFO_EHDR);
    uintptr_t phdr = (uintptr_t)info->dlpi_phdr;
    if (ehdr && phdr >= ehdr && phdr < ehdr + 4096) return 1; /* phdrs follow the vDSO's ELF header */
    return info->dlpi_name && strstr(info->dlpi_name, "linux-vdso") != NULL;
}

static int is_dynamic_linker(const struct dl_phdr_info *info) {
    uintptr_t base = (uintptr_t)getauxval(AT_BASE);
    if (base && info->dlpi_addr == base) return 1;
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    return strstr(name, "/ld-linux") != NULL || strstr(name, "/ld64.so") != NULL;
}

static uintptr_t dyn_ptr(const struct dl_phdr_info *info, ElfW(Addr) value) {
    /* glibc relocates the d_ptr entries of writable .dynamic sections in place */
    return value < info->dlpi_addr ? info->dlpi_addr + value : value;
}

/* The hooked functions by a hash of their names: nearly every relocation of an object
 * names another function (libpython has thousands), so a lookup is one hash and a probe,
 * and a strcmp only when the hashes match. Filled once (pthread_once). */
#define NAME_SLOTS 128 /* a power of two, well above cyt_hook_count */
static struct {
    uint32_t hash;
    const hook_entry *entry; /* NULL: empty */
} name_slots[NAME_SLOTS];
static pthread_once_t name_slots_once = PTHREAD_ONCE_INIT;

static uint32_t name_hash(const char *s) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static void fill_name_slots(void) {
    for (size_t i = 0; i < cyt_hook_count && i < NAME_SLOTS / 2; i++) {
        uint32_t h = name_hash(cyt_hook_table[i].name);
        size_t k = h & (NAME_SLOTS - 1);
        while (name_slots[k].entry != NULL) k = (k + 1) & (NAME_SLOTS - 1);
        name_slots[k].hash = h;
        name_slots[k].entry = &cyt_hook_table[i];
    }
}

static const hook_entry *hook_for(const char *name, int unwinder) {
    pthread_once(&name_slots_once, fill_name_slots);
    uint32_t h = name_hash(name);
    for (size_t k = h & (NAME_SLOTS - 1); name_slots[k].entry != NULL; k = (k + 1) & (NAME_SLOTS - 1))
        if (name_slots[k].hash == h && strcmp(name, name_slots[k].entry->name) == 0) return name_slots[k].entry;
    for (size_t i = 0; unwinder && i < cyt_unwinder_hook_count; i++)
        if (strcmp(name, cyt_unwinder_hook_table[i].name) == 0) return &cyt_unwinder_hook_table[i];
    return NULL;
}

static void set_relro_writable(object *o, int writable) {
    if (o->relro_end <= o->relro_start) return;
    uintptr_t start = o->relro_start & ~(page_size - 1);
    uintptr_t end = (o->relro_end + page_size - 1) & ~(page_size - 1);
    mprotect((void *)start, end - start, writable ? PROT_READ | PROT_WRITE : PROT_READ);
}

static void add_slot(object *o, uintptr_t *slot, const hook_entry *hook) {
    for (size_t i = 0; i < o->nslots; i++)
        if (o->slots[i].slot == slot) return;
    patched_slot *n = realloc(o->slots, (o->nslots + 1) * sizeof *n);
    if (n == NULL) return;
    o->slots = n;
    o->slots[o->nslots] = (patched_slot){slot, *slot, hook->hook, hook, 0};
    o->nslots++;
}

static void collect_relocs(const struct dl_phdr_info *info, object *o, const ElfW(Rela) *rel, size_t size,
                           const ElfW(Sym) *symtab, const char *strtab) {
    if (rel == NULL || symtab == NULL || strtab == NULL) return;
    for (size_t i = 0; i < size / sizeof *rel; i++) {
        unsigned long type = ELF64_R_TYPE(rel[i].r_info);
        if (type != R_X86_64_JUMP_SLOT && type != R_X86_64_GLOB_DAT) continue;
        unsigned long sym = ELF64_R_SYM(rel[i].r_info);
        if (sym == 0) continue;
        const hook_entry *hook = hook_for(strtab + symtab[sym].st_name, o->unwinder);
        if (hook != NULL) add_slot(o, (uintptr_t *)(info->dlpi_addr + rel[i].r_offset), hook);
    }
}

/* Point the object's slots at our hooks. */
static void write_hooks(object *o) {
    if (o->nslots == 0) return;
    set_relro_writable(o, 1);
    for (size_t i = 0; i < o->nslots; i++) *o->slots[i].slot = (uintptr_t)o->slots[i].hook;
    set_relro_writable(o, 0);
}

static void patch_object(const struct dl_phdr_info *info, object *o) {
    const ElfW(Dyn) *dyn = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_DYNAMIC) dyn = (const ElfW(Dyn) *)(info->dlpi_addr + ph->p_vaddr);
        if (ph->p_type == PT_GNU_RELRO) {
            o->relro_start = info->dlpi_addr + ph->p_vaddr;
            o->relro_end = o->relro_start + ph->p_memsz;
        }
    }
    if (dyn == NULL) return;
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    const ElfW(Rela) *jmprel = NULL, *rela = NULL;
    size_t pltrelsz = 0, relasz = 0;
    int pltrel_is_rela = 1;
    for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; d++) {
        switch (d->d_tag) {
        case DT_SYMTAB: symtab = (const ElfW(Sym) *)dyn_ptr(info, d->d_un.d_ptr); break;
        case DT_STRTAB: strtab = (const char *)dyn_ptr(info, d->d_un.d_ptr); break;
        case DT_JMPREL: jmprel = (const ElfW(Rela) *)dyn_ptr(info, d->d_un.d_ptr); break;
        case DT_PLTRELSZ: pltrelsz = d->d_un.d_val; break;
        case DT_RELA: rela = (const ElfW(Rela) *)dyn_ptr(info, d->d_un.d_ptr); break;
        case DT_RELASZ: relasz = d->d_un.d_val; break;
        case DT_PLTREL: pltrel_is_rela = d->d_un.d_val == DT_RELA; break;
        default: break;
        }
    }
    if (strtab != NULL)
        for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; d++)
            if (d->d_tag == DT_NEEDED && strstr(strtab + d->d_un.d_val, "libcytrace.so") != NULL) o->fp = 1;
    if (pltrel_is_rela) collect_relocs(info, o, jmprel, pltrelsz, symtab, strtab);
    collect_relocs(info, o, rela, relasz, symtab, strtab);
    write_hooks(o);
}

static void unpatch_object(object *o) {
    if (o->nslots == 0) return;
    set_relro_writable(o, 1);
    for (size_t i = 0; i < o->nslots; i++)
        if (*o->slots[i].slot == (uintptr_t)o->slots[i].hook) *o->slots[i].slot = o->slots[i].original;
    set_relro_writable(o, 0);
}

static void read_build_id(const struct dl_phdr_info *info, cyt_buf *out) {
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE) continue;
        const uint8_t *p = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
        const uint8_t *end = p + ph->p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *n = (const ElfW(Nhdr) *)p;
            const uint8_t *name = p + sizeof *n;
            const uint8_t *desc = name + ((n->n_namesz + 3) & ~3u);
            const uint8_t *next = desc + ((n->n_descsz + 3) & ~3u);
            if (next > end) break;
            if (n->n_type == NT_GNU_BUILD_ID && n->n_namesz == 4 && memcmp(name, "GNU", 4) == 0) {
                cyt_buf_string(out, (const char *)desc, n->n_descsz);
                return;
            }
            p = next;
        }
    }
    cyt_buf_string(out, "", 0);
}

static void object_record(const struct dl_phdr_info *info, uint32_t id, uint64_t generation, cyt_buf *out) {
    if (out == NULL) return;
    cyt_buf_varint(out, REC_OBJECT);
    cyt_buf_varint(out, id);
    cyt_buf_varint(out, info->dlpi_addr);
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    char exe[4096];
    if (name[0] == 0) {
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        exe[n > 0 ? n : 0] = 0;
        name = exe;
    }
    cyt_buf_string(out, name, strlen(name));
    read_build_id(info, out);
    uint64_t nseg = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) nseg += info->dlpi_phdr[i].p_type == PT_LOAD;
    cyt_buf_varint(out, nseg);
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD) continue;
        cyt_buf_varint(out, info->dlpi_addr + ph->p_vaddr);
        cyt_buf_varint(out, info->dlpi_addr + ph->p_vaddr + ph->p_memsz);
    }
    cyt_buf_varint(out, generation);
}

static object *find_object(uintptr_t base, const void *phdr) {
    for (size_t i = 0; i < nobjects; i++)
        if (objects[i].base == base && objects[i].phdr == phdr) return &objects[i];
    return NULL;
}

typedef struct scan_ctx {
    cyt_buf *out;
    int patch;
    uint64_t generation;
    int counted; /* the loader's load and unload counters were read (into adds, subs) */
    unsigned long long adds, subs;
} scan_ctx;

/* The parked object at (base, phdr), or NULL. */
static object *find_parked(uintptr_t base, const void *phdr) {
    for (size_t i = 0; i < nparked; i++)
        if (parked[i].base == base && parked[i].phdr == phdr) return &parked[i];
    return NULL;
}

static void drop_parked(void) {
    for (size_t i = 0; i < nparked; i++) free(parked[i].slots);
    free(parked);
    parked = NULL;
    nparked = 0;
    parked_valid = 0;
}

static int scan_one(struct dl_phdr_info *info, size_t size, void *arg) {
    scan_ctx *ctx = arg;
    if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) {
        ctx->counted = 1;
        ctx->adds = info->dlpi_adds;
        ctx->subs = info->dlpi_subs;
    }
    if (is_vdso(info)) return 0;
    object *o = find_object(info->dlpi_addr, info->dlpi_phdr);
    if (o != NULL) {
        o->present = 1;
        return 0;
    }
    if (!ctx->patch) return 0;
    if (nobjects == objects_cap) {
        size_t cap = objects_cap ? objects_cap * 2 : 64;
        object *n = realloc(objects, cap * sizeof *n);
        if (n == NULL) return 0;
        objects = n;
        objects_cap = cap;
    }
    o = &objects[nobjects++];
    memset(o, 0, sizeof *o);
    o->base = info->dlpi_addr;
    o->phdr = info->dlpi_phdr;
    o->id = ++next_object_id;
    o->present = 1;
    object_record(info, o->id, ctx->generation, ctx->out);
    if (is_dynamic_linker(info) || contains_self(info)) return 0;
    o->unwinder = info->dlpi_name != NULL && strstr(info->dlpi_name, "/libunwind") != NULL;
    object *known = parked_valid && ctx->counted && ctx->adds == parked_adds && ctx->subs == parked_subs
                        ? find_parked(o->base, o->phdr)
                        : NULL;
    if (known != NULL) { /* the same object as in the last session: its slots, read again */
        o->fp = known->fp;
        o->relro_start = known->relro_start;
        o->relro_end = known->relro_end;
        o->slots = known->slots;
        o->nslots = known->nslots;
        known->slots = NULL;
        known->nslots = 0;
        for (size_t i = 0; i < o->nslots; i++) {
            o->slots[i].original = *o->slots[i].slot;
            o->slots[i].foreign = 0;
        }
        write_hooks(o);
    } else {
        patch_object(info, o);
    }
    if (o->fp) {
        for (int i = 0; i < info->dlpi_phnum && o->nexec < 4; i++) {
            const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
            if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
            uintptr_t start = info->dlpi_addr + ph->p_vaddr;
            cyt_fp_objects_add(start, start + ph->p_memsz);
            o->exec_start[o->nexec++] = start;
        }
    }
    return 0;
}

/* Mark which known objects are still loaded; patch and describe new ones when `patch`;
 * forget the ones that went away (UNLOAD records when `out`). Caller holds patch_lock. */
static scan_ctx scan(cyt_buf *out, int patch, uint64_t generation) {
    if (page_size == 0) page_size = (size_t)sysconf(_SC_PAGESIZE);
    for (size_t i = 0; i < nobjects; i++) objects[i].present = 0;
    scan_ctx ctx = {out, patch, generation, 0, 0, 0};
    dl_iterate_phdr(scan_one, &ctx);
    size_t kept = 0;
    for (size_t i = 0; i < nobjects; i++) {
        object *o = &objects[i];
        if (o->present) {
            objects[kept++] = *o;
            continue;
        }
        if (out != NULL) {
            cyt_buf_varint(out, REC_UNLOAD);
            cyt_buf_varint(out, o->id);
            cyt_buf_varint(out, cyt_since_start());
            cyt_buf_varint(out, generation);
        }
        for (int k = 0; k < o->nexec; k++) cyt_fp_objects_add(o->exec_start[k], o->exec_start[k]);
        free(o->slots);
    }
    nobjects = kept;
    return ctx;
}

int cyt_patch_all(cyt_buf *objects_out) {
    pthread_mutex_lock(&patch_lock);
    scan(objects_out, 1, atomic_load(&cyt_load_generation));
    drop_parked(); /* only a session's first scan may use them */
    pthread_mutex_unlock(&patch_lock);
    return 0;
}

void cyt_objects_rescan(cyt_buf *out, uint64_t generation) {
    pthread_mutex_lock(&patch_lock);
    if (atomic_load(&cyt_active)) scan(out, 1, generation);
    pthread_mutex_unlock(&patch_lock);
}

/* ---- takeovers ------------------------------------------------------------------------ */

typedef struct check_ctx {
    cyt_buf *out;
    int repatch; /* tracing goes on: take back slots given back */
    struct change {
        uint32_t object;
        const char *name;
        uintptr_t target; /* 0: ours again */
    } *changes;
    size_t nchanges, cap;
} check_ctx;

/* Inside dl_iterate_phdr the loader's lock is held: no object can be unloaded while its
 * slots are read. */
static int check_one(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    check_ctx *ctx = arg;
    object *o = find_object(info->dlpi_addr, info->dlpi_phdr);
    if (o == NULL) return 0;
    for (size_t i = 0; i < o->nslots; i++) {
        patched_slot *s = &o->slots[i];
        uintptr_t now = __atomic_load_n(s->slot, __ATOMIC_RELAXED);
        if (now != (uintptr_t)s->hook && s->foreign != 0 && ctx->repatch &&
            (now == s->original || now == (uintptr_t)s->entry->real)) {
            /* given back: the other tracer put the real function back; ours again */
            set_relro_writable(o, 1);
            __atomic_store_n(s->slot, (uintptr_t)s->hook, __ATOMIC_RELAXED);
            set_relro_writable(o, 0);
            now = (uintptr_t)s->hook;
        }
        uintptr_t foreign = now == (uintptr_t)s->hook ? 0 : now;
        if (foreign == s->foreign) continue;
        s->foreign = foreign;
        if (ctx->nchanges == ctx->cap) {
            size_t cap = ctx->cap ? ctx->cap * 2 : 32;
            struct change *n = realloc(ctx->changes, cap * sizeof *n);
            if (n == NULL) return 0;
            ctx->changes = n;
            ctx->cap = cap;
        }
        ctx->changes[ctx->nchanges++] = (struct change){o->id, s->entry->name, foreign};
    }
    return 0;
}

void cyt_patch_check(cyt_buf *out, int blocking) {
    if (blocking) pthread_mutex_lock(&patch_lock);
    else if (pthread_mutex_trylock(&patch_lock) != 0) return; /* a dlopen is under way: next time */
    check_ctx ctx = {out, atomic_load(&cyt_active), NULL, 0, 0};
    if (nobjects > 0) dl_iterate_phdr(check_one, &ctx);
    pthread_mutex_unlock(&patch_lock);
    /* dladdr takes the loader's other lock: only outside dl_iterate_phdr */
    uint64_t now = cyt_since_start();
    for (size_t i = 0; i < ctx.nchanges; i++) {
        Dl_info where;
        const char *target = "";
        if (ctx.changes[i].target && dladdr((void *)ctx.changes[i].target, &where) && where.dli_fname)
            target = where.dli_fname;
        cyt_buf_varint(out, REC_TAKEOVER);
        cyt_buf_varint(out, now);
        cyt_buf_varint(out, TAKEOVER_GOT_SLOT);
        cyt_buf_varint(out, ctx.changes[i].object);
        cyt_buf_string(out, ctx.changes[i].name, strlen(ctx.changes[i].name));
        cyt_buf_string(out, target, strlen(target));
        cyt_buf_varint(out, ctx.changes[i].target ? 1 : 0);
    }
    free(ctx.changes);
}

uint64_t cyt_objects_described(void) {
    pthread_mutex_lock(&patch_lock);
    uint64_t n = next_object_id;
    pthread_mutex_unlock(&patch_lock);
    return n;
}

void cyt_unpatch_all(void) {
    pthread_mutex_lock(&patch_lock);
    scan_ctx seen = scan(NULL, 0, 0); /* drop objects unloaded behind our back: their slots are gone */
    for (size_t i = 0; i < nobjects; i++) unpatch_object(&objects[i]);
    drop_parked();
    parked = objects; /* with their slots, for the next session (see parked) */
    nparked = nobjects;
    parked_valid = seen.counted;
    parked_adds = seen.adds;
    parked_subs = seen.subs;
    objects = NULL;
    objects_cap = 0;
    nobjects = 0;
    next_object_id = 0;
    cyt_fp_objects_reset();
    pthread_mutex_unlock(&patch_lock);
}
